defmodule EcsPeers.Test.TLSNode do
  @moduledoc false
  # Real local BEAM nodes over TLS distribution (-proto_dist ecs_peers_tls / ecs_peers_tls6),
  # started with OTP's :peer over its standard-I/O control connection: the test VM stays
  # non-distributed, and each peer starts distribution late (net_kernel:start/1) once it holds
  # its credentials, made here with OTP's test-certificate functions (a CA per test; nothing on
  # disk). Each node listens on its own loopback address (127.77.0.x) or on ::1 with a port of
  # its own; the addresses a node dials from are not its own (the kernel picks 127.0.0.1 or ::1),
  # as in bridge mode and for consoles.

  @doc "A test CA: `%{cert: der, key: term}` (public_key `pkix_test_root_cert/2`)."
  def ca(name \\ "ecs-peers test CA"), do: :public_key.pkix_test_root_cert(~c"#{name}", [])

  @doc """
  Credentials signed by `ca` naming `addresses` (strings) as iPAddress and dNSName SANs, in the
  shape EcsPeers.TLS.credentials/1 returns. `not_after` and `renew_at` (halfway) drive renewal (the certificate's own
  validity is whole days: public_key's test certificates).
  """
  def credentials(ca, addresses, not_after_in \\ 86_400, kinds \\ [:iPAddress, :dNSName]) do
    sans =
      Enum.flat_map(addresses, fn a ->
        {:ok, ip} = :inet.parse_strict_address(~c"#{a}")
        [{:iPAddress, ip_bytes(ip)}, {:dNSName, ~c"#{a}"}] |> Enum.filter(&(elem(&1, 0) in kinds))
      end)

    peer = [
      extensions: [{:Extension, {2, 5, 29, 17}, false, sans}],
      key: {:namedCurve, :secp256r1}
    ]

    leaf = [key: {:namedCurve, :secp256r1}]

    data =
      :public_key.pkix_test_data(%{
        server_chain: %{root: ca, intermediates: [], peer: peer},
        client_chain: %{root: ca, intermediates: [], peer: leaf}
      })

    server = Map.fetch!(data, :server_config)

    {:ok,
     %{
       cert: Keyword.fetch!(server, :cert),
       key: Keyword.fetch!(server, :key),
       cacerts: [ca.cert],
       not_after: System.os_time(:second) + not_after_in,
       # This issuer's renewal point, halfway (the core has its own rule; EcsPeers.TLS follows
       # whichever issuer's renew_at).
       renew_at: System.os_time(:second) + div(not_after_in, 2),
       names: addresses
     }}
  end

  @doc false
  # The issuer a peer runs (EcsPeers.TLS.issue_with/1): a new certificate at each call.
  def issue(ca, addresses, not_after_in, _config), do: credentials(ca, addresses, not_after_in)

  @doc false
  # An issuer that cannot issue.
  def fail(_config), do: {:error, "no CA today"}

  @doc false
  # An issuer that raises with key material in its terms.
  def leaky(config), do: Keyword.fetch!([key: {:ECPrivateKey, "secret"}] ++ config, :cert)

  @doc false
  # Records the nodedown messages of this node (run on a peer): watch_nodedown/0, nodedowns/0.
  def watch_nodedown do
    parent = self()

    pid =
      spawn(fn ->
        :ok = :net_kernel.monitor_nodes(true)
        send(parent, :watching)
        nodedown_loop([])
      end)

    Process.register(pid, :tls_test_nodedowns)

    receive do
      :watching -> :ok
    end
  end

  def nodedowns do
    send(:tls_test_nodedowns, {:get, self()})

    receive do
      {:nodedowns, downs} -> downs
    end
  end

  defp nodedown_loop(downs) do
    receive do
      {:nodedown, node} -> nodedown_loop([node | downs])
      {:get, from} -> send(from, {:nodedowns, downs}) && nodedown_loop(downs)
      _ -> nodedown_loop(downs)
    end
  end

  defp ip_bytes({a, b, c, d}), do: <<a, b, c, d>>
  defp ip_bytes(ip6), do: for(w <- Tuple.to_list(ip6), into: <<>>, do: <<w::16>>)

  @doc """
  Starts a peer and its TLS distribution as `node` (e.g. "a@127.77.0.2"), with the certificate
  from `issuer` ({m, f, a}, called on the peer). Options: `:port` (the distribution port every
  node listens on), `:listen_port`, `:listen_on` (the address it listens on, default its
  name's), `:ipv6`, `:epmd` (:ecs_peers = EPMD-less, :epmd = OTP's
  EPMD), `:hidden`, `:cookie`. Returns `%{pid:, node:}`, or `{:error, reason}` when
  distribution does not start.
  """
  def start(node, issuer, opts) do
    [_, host] = String.split(node, "@")
    {:ok, ip} = :inet.parse_strict_address(~c"#{Keyword.get(opts, :listen_on, host)}")
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    proto = if opts[:ipv6], do: ~c"ecs_peers_tls6", else: ~c"ecs_peers_tls"

    epmd =
      case Keyword.get(opts, :epmd, :ecs_peers) do
        :ecs_peers -> [~c"-start_epmd", ~c"false", ~c"-epmd_module", ~c"Elixir.EcsPeers.Epmd"]
        :epmd -> []
      end

    args =
      [~c"-proto_dist", proto, ~c"-setcookie", ~c"#{Keyword.get(opts, :cookie, "tls-test")}"] ++
        [~c"-kernel", ~c"inet_dist_use_interface", ~c"#{inspect(ip)}"] ++
        [~c"-kernel", ~c"logger_level", ~c"emergency"] ++
        epmd ++ if(opts[:hidden], do: [~c"-hidden"], else: []) ++ paths

    env =
      [{~c"ECS_PEERS_TLS_CA", ~c"arn:aws:secretsmanager:eu-west-2:123456789012:secret:test-ca"}] ++
        for {var, key} <- [
              {"ECS_PEERS_DIST_PORT", :port},
              {"ECS_PEERS_LISTEN_PORT", :listen_port}
            ],
            opts[key],
            do: {~c"#{var}", ~c"#{opts[key]}"}

    {:ok, pid, _} = :peer.start_link(%{connection: :standard_io, args: args, env: env})
    :ok = :peer.call(pid, EcsPeers.TLS, :issue_with, [issuer])

    case :peer.call(pid, :net_kernel, :start, [[String.to_atom(node), :longnames]], 30_000) do
      {:ok, _} -> %{pid: pid, node: String.to_atom(node)}
      {:error, reason} -> {:error, reason}
    end
  end

  @doc "Lists `nodes` ({node_string, ip_string, port | nil}) as discovery would, on `peer`."
  def list(%{pid: pid}, nodes) do
    entries =
      for {n, a, port} <- nodes do
        {:ok, ip} = :inet.parse_strict_address(~c"#{a}")
        {String.to_atom(n), ip, port}
      end

    :ok = :peer.call(pid, EcsPeers.Epmd, :put_peers, [entries])
  end

  @doc "`peer` dials `node`: true or false (net_kernel:connect_node/1)."
  def connect(%{pid: pid}, node), do: :peer.call(pid, :net_kernel, :connect_node, [node], 30_000)

  @doc "Calls `m.f(a)` on `peer`."
  def call(%{pid: pid}, m, f, a), do: :peer.call(pid, m, f, a, 30_000)

  @doc "Stops a peer."
  def stop(%{pid: pid}), do: :peer.stop(pid)
  def stop(_), do: :ok
end
