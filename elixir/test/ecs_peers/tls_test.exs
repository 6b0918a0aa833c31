defmodule EcsPeers.TLSTest do
  # Real BEAM nodes over TLS distribution (EcsPeers.Test.TLSNode): the identity rule of
  # EcsPeers.TLS, both directions, EPMD-less and with OTP's EPMD, IPv4 and IPv6, and renewal.
  use ExUnit.Case, async: false

  alias EcsPeers.Test.TLSNode

  @moduletag timeout: 180_000

  setup do
    # A port of this test's own on every 127.77.0.x address (several test runs share the machine).
    port = 20_000 + :rand.uniform(20_000)
    ca = TLSNode.ca()
    on_exit(fn -> Process.get(:tls_nodes, []) |> Enum.each(&TLSNode.stop/1) end)
    %{port: port, ca: ca}
  end

  # A node at `addr` named `name@addr` whose certificate (signed by `ca`) names `cert_addrs`.
  defp node!(ctx, name, addr, opts \\ []) do
    cert_addrs = Keyword.get(opts, :cert, [addr])
    ca = Keyword.get(opts, :ca, ctx.ca)
    issuer = {TLSNode, :issue, [ca, cert_addrs, Keyword.get(opts, :not_after_in, 86_400)]}
    node = TLSNode.start("#{name}@#{addr}", issuer, Keyword.put_new(opts, :port, ctx.port))
    assert %{node: _} = node
    Process.put(:tls_nodes, [node | Process.get(:tls_nodes, [])])
    node
  end

  defp list(node, others),
    do: TLSNode.list(node, for(o <- others, do: {"#{o.node}", host(o), nil}))

  defp host(%{node: n}), do: n |> Atom.to_string() |> String.split("@") |> List.last()

  defp nodes(n), do: TLSNode.call(n, Node, :list, [:connected])

  describe "EPMD-less (EcsPeers.Epmd), IPv4" do
    test "listed nodes with certificates for their addresses mesh, dialling from other addresses",
         ctx do
      a = node!(ctx, "a", "127.77.0.2")
      b = node!(ctx, "b", "127.77.0.3")
      c = node!(ctx, "c", "127.77.0.4")
      for n <- [a, b, c], do: list(n, [a, b, c] -- [n])

      assert TLSNode.connect(a, b.node)
      assert TLSNode.connect(c, a.node)
      assert TLSNode.connect(b, c.node)
      assert Enum.sort(nodes(a)) == Enum.sort([b.node, c.node])
      # c reached a from 127.0.0.1, not from its own address, as in bridge mode and consoles.
      {:ok, info} = TLSNode.call(a, :net_kernel, :node_info, [c.node])
      assert {:net_address, {{127, 0, 0, 1}, _}, _, :tls, :inet} = info[:address]
      assert TLSNode.call(b, :rpc, :call, [c.node, :erlang, :node, []]) == c.node
    end

    test "a node whose certificate is not signed by the cluster CA is refused, both ways", ctx do
      a = node!(ctx, "a", "127.77.0.2")
      x = node!(ctx, "x", "127.77.0.5", ca: TLSNode.ca("another CA"))
      list(a, [x])
      list(x, [a])

      refute TLSNode.connect(x, a.node)
      refute TLSNode.connect(a, x.node)
      assert nodes(a) == []
    end

    test "a node with a CA-signed certificate for another address is refused, both ways", ctx do
      a = node!(ctx, "a", "127.77.0.2")
      # x is at .5 and listed there; its certificate is for .9 (listed too: a real node's).
      x = node!(ctx, "x", "127.77.0.5", cert: ["127.77.0.9"])
      list(a, [x])
      TLSNode.list(a, [{"x@127.77.0.5", "127.77.0.5", nil}, {"n@127.77.0.9", "127.77.0.9", nil}])
      list(x, [a])

      refute TLSNode.connect(x, a.node)
      refute TLSNode.connect(a, x.node)
      assert nodes(a) == []
    end

    test "a node claiming another node's name is refused", ctx do
      a = node!(ctx, "a", "127.77.0.2")
      b = node!(ctx, "b", "127.77.0.3")
      # The impostor holds a CA-signed certificate for its own (listed) address, .4, and
      # calls itself b@127.77.0.3, listening on .4: a dials it as b through the lookup.
      imp = node!(ctx, "b", "127.77.0.3", cert: ["127.77.0.4"], listen_on: "127.77.0.4")
      _ = b
      TLSNode.list(a, [{"b@127.77.0.3", "127.77.0.4", nil}, {"c@127.77.0.4", "127.77.0.4", nil}])
      list(imp, [a])

      refute TLSNode.connect(imp, a.node)
      refute TLSNode.connect(a, :"b@127.77.0.3")
      assert nodes(a) == []
    end

    test "a node discovery does not list is refused; listed later, it is accepted", ctx do
      a = node!(ctx, "a", "127.77.0.2")
      d = node!(ctx, "d", "127.77.0.6")
      list(d, [a])
      list(a, [])

      refute TLSNode.connect(d, a.node)
      list(a, [d])
      assert TLSNode.connect(d, a.node)
    end

    test "a console of this node (another name at its address, hidden) is accepted unlisted",
         ctx do
      a = node!(ctx, "a", "127.77.0.2")
      list(a, [])
      console = node!(ctx, "rem-1234-a", "127.77.0.2", hidden: true, listen_port: 0)

      assert TLSNode.connect(console, a.node)
      assert TLSNode.call(console, :rpc, :call, [a.node, :erlang, :node, []]) == a.node
    end
  end

  describe "OTP's EPMD" do
    setup do
      # `erl -name` starts EPMD itself; a node started late does not.
      {_, 0} = System.cmd(System.find_executable("epmd") || "epmd", ["-daemon"])
      :ok
    end

    test "listed nodes mesh; a node claiming another node's name is refused", ctx do
      suffix = System.unique_integer([:positive])
      a = node!(ctx, "a#{suffix}", "127.77.0.2", epmd: :epmd)
      b = node!(ctx, "b#{suffix}", "127.77.0.3", epmd: :epmd)

      imp =
        node!(ctx, "c#{suffix}", "127.77.0.3",
          cert: ["127.77.0.4"],
          epmd: :epmd,
          listen_on: "127.77.0.4"
        )

      for n <- [a, b], do: list(n, [a, b, imp] -- [n])
      list(imp, [a])

      assert TLSNode.connect(a, b.node)
      refute TLSNode.connect(imp, a.node)
      assert nodes(a) == [b.node]
    end
  end

  describe "IPv6 (ecs_peers_tls6)" do
    test "two nodes on ::1 mesh; a certificate for another address is refused", ctx do
      p = ctx.port
      a = node!(ctx, "a", "::1", ipv6: true, listen_port: p)
      b = node!(ctx, "b", "::1", ipv6: true, listen_port: p + 1)
      x = node!(ctx, "x", "::1", ipv6: true, listen_port: p + 2, cert: ["fd00::9"])
      entries = [{"a@::1", "::1", p}, {"b@::1", "::1", p + 1}, {"x@::1", "::1", p + 2}]
      for n <- [a, b, x], do: TLSNode.list(n, entries)

      assert TLSNode.connect(a, b.node)
      refute TLSNode.connect(x, a.node)
      refute TLSNode.connect(a, x.node)
      assert nodes(a) == [b.node]
    end
  end

  describe "renewal" do
    test "a renewed certificate serves new connections; established links stay up", ctx do
      # a's certificate is renewed two thirds into a 3-second lifetime, and again after that.
      a = node!(ctx, "a", "127.77.0.2", not_after_in: 3)
      b = node!(ctx, "b", "127.77.0.3")
      for n <- [a, b], do: list(n, [a, b] -- [n])
      assert TLSNode.connect(b, a.node)
      :ok = TLSNode.call(b, EcsPeers.Test.TLSNode, :watch_nodedown, [])

      first = served_cert(ctx, "127.77.0.2")
      not_after = TLSNode.call(a, EcsPeers.TLS, :not_after, [])
      wait_until(fn -> TLSNode.call(a, EcsPeers.TLS, :not_after, []) > not_after end)

      assert served_cert(ctx, "127.77.0.2") != first
      assert nodes(b) == [a.node]
      assert TLSNode.call(b, EcsPeers.Test.TLSNode, :nodedowns, []) == []

      # Renewal on demand, and a new node meshes with both.
      assert {:ok, _} = TLSNode.call(b, EcsPeers.TLS, :renew, [])
      c = node!(ctx, "c", "127.77.0.4")
      for n <- [a, b, c], do: list(n, [a, b, c] -- [n])
      assert TLSNode.connect(c, a.node)
      assert TLSNode.connect(c, b.node)
      assert TLSNode.call(b, EcsPeers.Test.TLSNode, :nodedowns, []) == []
    end

    test "a failed renewal keeps the current certificate", ctx do
      a = node!(ctx, "a", "127.77.0.2")
      TLSNode.list(a, [{"b@127.77.0.3", "127.77.0.3", nil}])
      first = served_cert(ctx, "127.77.0.2")
      :ok = TLSNode.call(a, EcsPeers.TLS, :issue_with, [{EcsPeers.Test.TLSNode, :fail, []}])

      assert TLSNode.call(a, EcsPeers.TLS, :renew, []) == {:error, "no CA today"}
      assert served_cert(ctx, "127.77.0.2") == first
    end

    test "a failed renewal is retried while the current certificate is still valid", ctx do
      # A certificate with 10 s to live (the least tls_validity, one minute, leaves 20 s after
      # renew_at): one failed renewal must not leave the node without a valid certificate, which
      # refuses every new connection until the next attempt.
      a = node!(ctx, "a", "127.77.0.2", not_after_in: 10)
      :ok = TLSNode.call(a, EcsPeers.TLS, :issue_with, [{TLSNode, :fail, []}])
      expires = TLSNode.call(a, EcsPeers.TLS, :not_after, [])
      assert TLSNode.call(a, EcsPeers.TLS, :renew, []) == {:error, "no CA today"}

      :ok =
        TLSNode.call(a, EcsPeers.TLS, :issue_with, [
          {TLSNode, :issue, [ctx.ca, ["127.77.0.2"], 86_400]}
        ])

      # Renewed by the retry alone (nothing calls renew again), before `expires`.
      renewed_at =
        Stream.repeatedly(fn ->
          Process.sleep(100)
          {TLSNode.call(a, EcsPeers.TLS, :not_after, []), System.os_time(:second)}
        end)
        |> Enum.find(fn {not_after, now} -> not_after != expires or now > expires + 1 end)
        |> then(fn {not_after, now} -> if not_after != expires, do: now end)

      assert renewed_at && renewed_at <= expires,
             "not renewed before the certificate expired at #{expires} (renewed at #{inspect(renewed_at)})"
    end
  end

  describe "before the first credentials" do
    test "every handshake is refused; once they arrive, the node connects", ctx do
      a = node!(ctx, "a", "127.77.0.2")
      b = TLSNode.start("b@127.77.0.3", {TLSNode, :fail, []}, port: ctx.port)
      Process.put(:tls_nodes, [b | Process.get(:tls_nodes)])
      assert TLSNode.call(b, EcsPeers.TLS, :not_after, []) == nil
      for {n, o} <- [{a, b}, {b, a}], do: list(n, [o])

      refute TLSNode.connect(b, a.node)
      refute TLSNode.connect(a, b.node)

      :ok =
        TLSNode.call(b, EcsPeers.TLS, :issue_with, [
          {TLSNode, :issue, [ctx.ca, ["127.77.0.3"], 86_400]}
        ])

      assert {:ok, _} = TLSNode.call(b, EcsPeers.TLS, :renew, [])
      assert TLSNode.connect(b, a.node)
    end

    test "without ECS_PEERS_TLS_CA distribution does not start, naming the variable" do
      {:ok, pid, _} =
        :peer.start_link(%{
          connection: :standard_io,
          args:
            [~c"-proto_dist", ~c"ecs_peers_tls"] ++
              Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
        })

      assert {:error, reason} =
               :peer.call(pid, :net_kernel, :start, [[:"a@127.77.0.2", :longnames]])

      assert inspect(reason) =~ "ECS_PEERS_TLS_CA is not set"
      :peer.stop(pid)
    end
  end

  describe "certificate names (no node)" do
    setup ctx do
      {:ok, both} = TLSNode.credentials(ctx.ca, ["10.0.1.5"])
      ip_only = TLSNode.credentials(ctx.ca, ["10.0.1.5"], 60, [:iPAddress])
      {:ok, v6} = TLSNode.credentials(ctx.ca, ["fd00::5"])
      %{both: both.cert, ip_only: elem(ip_only, 1).cert, v6: v6.cert}
    end

    test "names_any?/2 matches the address as iPAddress or dNSName, never another", c do
      assert EcsPeers.TLS.names_any?(c.both, ["10.0.1.9", "10.0.1.5"])
      assert EcsPeers.TLS.names_any?(c.ip_only, [~c"10.0.1.5"])
      refute EcsPeers.TLS.names_any?(c.both, ["10.0.1.6", "ip-10-0-1-5.ec2.internal"])
      refute EcsPeers.TLS.names_any?(c.both, [])
      assert EcsPeers.TLS.names_any?(c.v6, ["fd00::5"])
      refute EcsPeers.TLS.names_any?(c.v6, ["fd00::6"])
    end

    test "the dialling side's match_fun ties an iPAddress SAN to the dialled host", c do
      opts = [match_fun: &EcsPeers.TLS.match_address/2]
      # OTP dials with the host as a dns_id: without the match_fun an IP-only certificate fails.
      refute :public_key.pkix_verify_hostname(c.ip_only, dns_id: ~c"10.0.1.5")
      assert :public_key.pkix_verify_hostname(c.ip_only, [dns_id: ~c"10.0.1.5"], opts)
      refute :public_key.pkix_verify_hostname(c.ip_only, [dns_id: ~c"10.0.1.6"], opts)
      assert :public_key.pkix_verify_hostname(c.v6, [dns_id: ~c"fd00::5"], opts)
      refute :public_key.pkix_verify_hostname(c.v6, [dns_id: ~c"fd00::6"], opts)
    end

    test "read_config/1 hands tls_ca and tls_validity to the core as text, naming the variable" do
      arn = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:ca"
      assert EcsPeers.TLS.read_config(%{"ECS_PEERS_TLS_CA" => arn}) == {:ok, [tls_ca: arn]}

      for validity <- ["10m", "600000"] do
        assert EcsPeers.TLS.read_config(%{
                 "ECS_PEERS_TLS_CA" => arn,
                 "ECS_PEERS_TLS_VALIDITY" => validity
               }) == {:ok, [tls_ca: arn, tls_validity: validity]}
      end

      assert {:error, "ECS_PEERS_TLS_CA is not set" <> _} = EcsPeers.TLS.read_config(%{})
    end

    test "credentials/1 reports a bad issuer without its terms" do
      :ok = EcsPeers.TLS.issue_with({EcsPeers.Test.TLSNode, :leaky, []})
      assert EcsPeers.TLS.credentials([]) == {:error, "the issuer raised KeyError"}
      :ok = EcsPeers.TLS.issue_with({EcsPeers.Test.TLSNode, :fail, []})
      assert EcsPeers.TLS.credentials([]) == {:error, "no CA today"}
    after
      Application.delete_env(:ecs_peers, :tls_issuer)
    end
  end

  # The certificate the node at `addr` serves to a new connection (a TLS handshake with its
  # distribution port, as a listed node: .3).
  defp served_cert(ctx, addr) do
    {:ok, creds} = TLSNode.credentials(ctx.ca, ["127.77.0.3"])
    {:ok, ip} = :inet.parse_address(~c"#{addr}")

    {:ok, socket} =
      :ssl.connect(
        ip,
        ctx.port,
        [
          cert: creds.cert,
          key: creds.key,
          cacerts: creds.cacerts,
          verify: :verify_peer,
          server_name_indication: ~c"#{addr}",
          active: false
        ],
        10_000
      )

    {:ok, der} = :ssl.peercert(socket)
    :ssl.close(socket)
    der
  end

  defp wait_until(fun, tries \\ 300) do
    cond do
      fun.() -> :ok
      tries == 0 -> flunk("the condition did not hold within 30 s")
      true -> Process.sleep(100) && wait_until(fun, tries - 1)
    end
  end

  describe "the in-process diagnosis's credentials" do
    test "tls_validity reaches the core as the node's text, read by the key table" do
      config = [
        node_basename: "app",
        endpoint_url: "http://127.0.0.1:9",
        max_attempts: 1,
        sources: [[type: :ecs, region: "eu-west-2", cluster: "web"]]
      ]

      {:ok, {validated, _}} = EcsPeers.configure(config)
      {:ok, poller} = EcsPeers.Native.start(validated, self(), 1)

      try do
        # As EcsPeers.TLS.current_credentials/0 makes it, with ECS_PEERS_TLS_VALIDITY=1h.
        tls = %EcsPeers.TLS.Current{cert: "c", key: "k", cacerts: ["ca"], validity: "1h"}

        diagnose =
          &EcsPeers.native(fn ->
            EcsPeers.Native.diagnose(poller, "app@10.0.0.1", nil, &1, false, self(), 2)
          end)

        # Read, then the peer looked up: no poll has listed it.
        assert {:error, message} = diagnose.(tls)
        assert message =~ "app@10.0.0.1 is not a peer of the last update"
        assert {:error, message} = diagnose.(%{tls | validity: nil})
        assert message =~ "is not a peer of the last update"
        assert {:error, message} = diagnose.(%{tls | validity: "soon"})
        assert message =~ "tls_validity"
      after
        EcsPeers.Native.stop(poller)
      end
    end
  end
end
