defmodule EcsPeers.Epmd do
  @moduledoc """
  Erlang distribution without EPMD: every node listens on one known port, and the address and
  port of each peer come from ECS (the latest snapshot of the strategy), not from an EPMD on
  port 4369.

  Start the VM with

      -start_epmd false -epmd_module Elixir.EcsPeers.Epmd

  (in `rel/vm.args.eex` and `rel/remote.vm.args.eex`; see docs/distribution.md). The
  distribution layer then asks this module, instead of `:erl_epmd`:

  - which port to listen on (`listen_port_please/2`): `ECS_PEERS_DIST_PORT`; a hidden node
    (a remote console, `bin/my_app rpc`) listens on an ephemeral port instead, so it can run
    beside the node it attaches to;
  - where a peer is (`address_please/3`): the address and port ECS reports for it (in bridge
    mode the host port Docker mapped to the container's distribution port), from the lookup
    that `put_peers/1` fills; a node that is not in it (a remote console, a node started by
    hand) is reached at the host part of its name and `ECS_PEERS_DIST_PORT`, which is right
    wherever every node listens on the same port (awsvpc, Fargate, host mode).

  No call ever blocks on a process or crashes the distribution layer: lookups read an ETS table
  directly, and before the table exists (or when this module is not the VM's EPMD module) they
  answer as if it were empty.

  ## Configuration (OS environment, read when the VM starts distribution)

  Distribution starts before any application, so these cannot come from `config/*.exs`.

  | variable | default | meaning |
  | --- | --- | --- |
  | `ECS_PEERS_DIST_PORT` | 4370 | The port every node of the cluster listens on (the container port in bridge mode), and the port used for nodes that ECS did not report. |
  | `ECS_PEERS_LISTEN_PORT` | `ECS_PEERS_DIST_PORT`; 0 for a `-hidden` node | The port this node listens on; 0 = any free port. |
  | `ECS_PEERS_STATIC_PEERS` | - | Nodes outside ECS, `node=host[:port]` separated by spaces or commas (port defaults to `ECS_PEERS_DIST_PORT`); e.g. `app-1f2e@10.0.1.5=127.0.0.1` lets a console inside a bridge-mode container reach its own node. ECS's answer wins for a node in both. |

  A bad value stops distribution from starting, with a message naming the variable.

  ## Callbacks (the `-epmd_module` contract, erts "alt_disco" guide and `:erl_epmd`)

  - `start_link/0` (OTP 21): started by kernel's `erl_distribution` supervisor before
    `net_kernel`; reads the configuration and owns the lookup table.
  - `listen_port_please/2` (OTP 23): the port `inet_tcp_dist`/`inet_tls_dist` listen on.
  - `register_node/2,3` (OTP 21): called after listening; returns the node's creation.
  - `address_please/3` (OTP 21): called for each outgoing connection with the name and host
    parts of the node name; returning `{ok, Ip, Port, Version}` means `port_please` is not
    called. `port_please/2,3` answers the same lookup for callers that resolve the host
    themselves.
  - `names/1`: `net_adm:names/1`; the nodes of the lookup on that host.

  The distribution version returned is 6 (the OTP 23 handshake): every node an OTP 25 node can
  talk to is OTP 23 or later; OTP 26+ ignore the value.
  """

  use GenServer

  @table __MODULE__
  @config_key {__MODULE__, :config}
  @default_port 4370
  @dist_version 6

  @typedoc """
  Where a peer is dialled, as the NIF reports it (`EcsPeers.Update`'s `dial`): its node name,
  its address, and the port to dial (the mapped host port in bridge mode), or `nil` when the
  source reported none (then `ECS_PEERS_DIST_PORT`, the port every node listens on).
  """
  @type peer :: {node(), :inet.ip_address(), 1..65535 | nil}

  # ---------------------------------------------------------------------------------------------
  # Public API

  @doc """
  Replaces the lookup with `peers` (the latest snapshot): `[{:"app@10.0.1.5", {10, 0, 1, 5},
  4370}]`, one entry per peer (`t:peer/0`). `EcsPeers.Strategy` and `EcsPeers.Cluster` call it
  with each update that changes it, with the entries the NIF decoded (nothing is parsed here).

  Returns `:ok`; `:ignored` when the lookup does not run (this VM uses neither `-epmd_module
  Elixir.EcsPeers.Epmd` nor TLS distribution, `EcsPeers.TLS`, which starts it in both modes)
  (nothing to update); `{:error, message}` naming the first bad entry (nothing is changed).
  Readers never see a partial update: new entries are written before stale ones are removed.
  """
  @spec put_peers([peer]) :: :ok | :ignored | {:error, String.t()}
  def put_peers(peers) when is_list(peers) do
    default_port =
      case config() do
        {:ok, config} -> config.dist_port
        {:error, _} -> nil
      end

    with {:ok, rows} <- rows(peers, default_port, 0, []) do
      case GenServer.whereis(__MODULE__) do
        nil -> :ignored
        pid -> GenServer.call(pid, {:put, rows})
      end
    end
  end

  def put_peers(other), do: {:error, "peers: #{inspect(other)} is not a list of peers"}

  @doc "Where `node` is dialled: `{:ok, {ip | hostname, port}}` from the lookup, or `:error`."
  @spec lookup(node() | String.t()) :: {:ok, {:inet.ip_address() | charlist(), 1..65535}} | :error
  def lookup(node) do
    case find({:node, to_string(node)}) do
      {:ok, addr, port} -> {:ok, {addr, port}}
      :none -> :error
    end
  end

  @doc """
  The node names in the lookup (the latest snapshot) and in `ECS_PEERS_STATIC_PEERS`, as
  strings: the nodes discovery lists. Read from the table directly, never through a process;
  `[]` before it exists. `EcsPeers.TLS` accepts connections only from these nodes' hosts.
  """
  @spec listed_nodes() :: [String.t()]
  def listed_nodes do
    snapshot =
      try do
        :ets.select(@table, [{{{:node, :"$1"}, :_, :_}, [], [:"$1"]}])
      rescue
        ArgumentError -> []
      end

    static =
      case config() do
        {:ok, config} -> for {{:node, n}, _, _} <- config.static, do: n
        {:error, _} -> []
      end

    snapshot ++ static
  end

  @doc """
  Whether this VM resolves nodes through this module: it runs with `-epmd_module
  Elixir.EcsPeers.Epmd` (the VM's argument, which OTP's `net_kernel:epmd_module/0` reads too).
  Not whether this module's process runs: TLS distribution with OTP's EPMD starts it as well,
  to keep the list of nodes discovery lists (`listed_nodes/0`).
  """
  @spec in_use?() :: boolean()
  def in_use? do
    case :init.get_argument(:epmd_module) do
      {:ok, [[mod | _] | _]} -> List.to_atom(mod) == __MODULE__
      _ -> false
    end
  end

  # ---------------------------------------------------------------------------------------------
  # -epmd_module callbacks

  @doc false
  def start_link do
    case read_config(System.get_env(), hidden?()) do
      {:ok, config} ->
        :persistent_term.put(@config_key, config)
        GenServer.start_link(__MODULE__, config, name: __MODULE__)

      {:error, message} ->
        # Logger is not running yet: print it (erlang:display_string), refuse to start distribution.
        :erlang.display_string(~c"EcsPeers.Epmd: #{message}\n")
        {:error, {:invalid_config, message}}
    end
  end

  @doc false
  def listen_port_please(_name, _host) do
    case config() do
      {:ok, config} -> {:ok, config.listen_port}
      {:error, message} -> {:error, message}
    end
  end

  @doc false
  def register_node(name, port), do: register_node(name, port, :inet)

  @doc false
  # Creation tells incarnations of the same node name apart (pids of a restarted node are not
  # mistaken for the old one's). EPMD hands out increasing numbers; a random 32-bit value
  # (OTP 23+ creations are 32-bit; 0..3 are avoided as net_kernel does) serves the same end.
  def register_node(_name, _port, _family), do: {:ok, 3 + :rand.uniform(0xFFFFFFFF - 3)}

  @doc false
  def address_please(name, host, family) do
    name = to_string(name)
    host = host_string(host)

    case find({:node, name <> "@" <> host}) do
      {:ok, addr, port} ->
        with {:ok, ip} <- :inet.getaddr(addr, family), do: {:ok, ip, port, @dist_version}

      :none ->
        with {:ok, config} <- config(),
             {:ok, ip} <- :inet.getaddr(String.to_charlist(host), family),
             do: {:ok, ip, config.dist_port, @dist_version}
    end
  end

  @doc false
  def port_please(name, host), do: port_please(name, host, :infinity)

  @doc false
  def port_please(name, host, _timeout) do
    key =
      if is_tuple(host),
        do: {:addr, to_string(name), host},
        else: {:node, to_string(name) <> "@" <> host_string(host)}

    case find(key) do
      {:ok, _addr, port} ->
        {:port, port, @dist_version}

      :none ->
        case config() do
          {:ok, config} -> {:port, config.dist_port, @dist_version}
          {:error, message} -> {:error, message}
        end
    end
  end

  @doc false
  def names do
    {:ok, host} = :inet.gethostname()
    names(host)
  end

  @doc false
  def names(host) do
    case :inet.getaddr(host_charlist(host), :inet) do
      {:ok, ip} ->
        pattern = {{:addr, :"$1", ip}, :_, :"$2"}

        snapshot =
          try do
            :ets.match(@table, pattern)
          rescue
            ArgumentError -> []
          end

        static =
          case config() do
            {:ok, config} -> for {{:addr, n, ^ip}, _, p} <- config.static, do: [n, p]
            {:error, _} -> []
          end

        {:ok, for([n, p] <- Enum.uniq_by(snapshot ++ static, &hd/1), do: {~c"#{n}", p})}

      {:error, _} ->
        {:error, :address}
    end
  end

  # ---------------------------------------------------------------------------------------------
  # The table's owner (a child of kernel's erl_distribution supervisor)

  @impl GenServer
  def init(_config) do
    :ets.new(@table, [:named_table, :set, :protected, read_concurrency: true])
    {:ok, MapSet.new()}
  end

  @impl GenServer
  def handle_call({:put, rows}, _from, keys) do
    true = :ets.insert(@table, rows)
    new_keys = MapSet.new(rows, &elem(&1, 0))
    for key <- MapSet.difference(keys, new_keys), do: :ets.delete(@table, key)
    {:reply, :ok, new_keys}
  end

  # ---------------------------------------------------------------------------------------------
  # Lookup

  defp find(key) do
    case :ets.lookup(@table, key) do
      [{_key, addr, port}] -> {:ok, addr, port}
      [] -> find_static(key)
    end
  rescue
    # No table: this VM's distribution did not start through this module (yet).
    ArgumentError -> find_static(key)
  end

  defp find_static(key) do
    with {:ok, config} <- config(),
         {_key, addr, port} <- List.keyfind(config.static, key, 0) do
      {:ok, addr, port}
    else
      _ -> :none
    end
  end

  # Read once when distribution starts; before that (a direct call), from the environment.
  defp config do
    case :persistent_term.get(@config_key, nil) do
      nil -> read_config(System.get_env(), hidden?())
      config -> {:ok, config}
    end
  end

  defp hidden?, do: match?({:ok, _}, :init.get_argument(:hidden))

  # Each peer is two rows: by node name (address_please) and by name and IP (port_please with
  # an address, names/1).
  defp rows([], _default_port, _index, acc), do: {:ok, acc}

  defp rows([peer | rest], default_port, index, acc) do
    case peer_rows(peer, default_port) do
      {:ok, rows} -> rows(rest, default_port, index + 1, rows ++ acc)
      {:error, message} -> {:error, "peers[#{index}]#{message}"}
    end
  end

  defp rows(other, _default_port, index, _acc),
    do: {:error, "peers[#{index}..]: #{inspect(other)} is not a list"}

  defp peer_rows({node, ip, port}, default_port) when is_atom(node) and is_tuple(ip) do
    peer_rows(Atom.to_string(node), ip, port, default_port)
  end

  defp peer_rows(other, _),
    do:
      {:error,
       ": #{inspect(other)} is not a peer; expected {node, ip_tuple, port | nil}, e.g. {:\"app@10.0.1.5\", {10, 0, 1, 5}, 4370}"}

  # `addr`: an IP tuple, or (ECS_PEERS_STATIC_PEERS only) a host name charlist, resolved when a
  # connection is set up, as erl_epmd does.
  defp peer_rows(node, addr, port, default_port) do
    with {:ok, name} <- node_name(node),
         {:ok, port} <- port_number(port, default_port) do
      by_addr = if is_tuple(addr), do: [{{:addr, name, addr}, addr, port}], else: []
      {:ok, [{{:node, node}, addr, port} | by_addr]}
    end
  end

  defp node_name(node) when is_binary(node) do
    case String.split(node, "@") do
      [name, host] when name != "" and host != "" -> {:ok, name}
      _ -> {:error, ".node: #{inspect(node)} is not a node name; expected name@host"}
    end
  end

  # An IP literal is kept parsed; a DNS name is resolved when a connection is set up.
  defp address(host) when is_binary(host) and host != "" do
    case :inet.parse_address(String.to_charlist(host)) do
      {:ok, ip} -> {:ok, ip}
      {:error, _} -> {:ok, String.to_charlist(host)}
    end
  end

  defp address(host), do: {:error, ".host: #{inspect(host)} is not an address"}

  defp port_number(nil, default) when is_integer(default), do: {:ok, default}
  defp port_number(port, _) when is_integer(port) and port in 1..65535, do: {:ok, port}

  defp port_number(port, _),
    do: {:error, ".port: #{inspect(port)} is not a port number; expected an integer 1..65535"}

  defp host_string(host) when is_tuple(host), do: host |> :inet.ntoa() |> to_string()
  defp host_string(host), do: to_string(host)

  defp host_charlist(host) when is_tuple(host), do: host
  defp host_charlist(host), do: host |> to_string() |> String.to_charlist()

  # ---------------------------------------------------------------------------------------------
  # Configuration from the environment

  @doc false
  def read_config(env, hidden?) do
    with {:ok, dist_port} <- env_port(env, "ECS_PEERS_DIST_PORT", @default_port, 1),
         {:ok, listen_port} <-
           env_port(env, "ECS_PEERS_LISTEN_PORT", if(hidden?, do: 0, else: dist_port), 0),
         {:ok, static} <- static_peers(Map.get(env, "ECS_PEERS_STATIC_PEERS", ""), dist_port) do
      {:ok, %{dist_port: dist_port, listen_port: listen_port, static: static}}
    end
  end

  defp env_port(env, var, default, min) do
    case Map.get(env, var) do
      value when value in [nil, ""] ->
        {:ok, default}

      value ->
        case Integer.parse(String.trim(value)) do
          {port, ""} when port in min..65535 ->
            {:ok, port}

          _ ->
            {:error,
             "#{var}=#{inspect(value)} is not a port number; expected an integer #{min}..65535, e.g. #{@default_port}"}
        end
    end
  end

  defp static_peers(value, dist_port) do
    value
    |> String.split([" ", ",", "\n", "\t"], trim: true)
    |> Enum.reduce_while({:ok, []}, fn entry, {:ok, acc} ->
      case static_peer(entry, dist_port) do
        {:ok, rows} ->
          {:cont, {:ok, acc ++ rows}}

        {:error, message} ->
          {:halt,
           {:error,
            "ECS_PEERS_STATIC_PEERS: #{inspect(entry)}#{message}; expected node=host[:port], e.g. app@10.0.1.5=127.0.0.1:4370"}}
      end
    end)
  end

  defp static_peer(entry, dist_port) do
    with [node, hostport] <- String.split(entry, "=", parts: 2),
         {:ok, host, port} <- split_hostport(hostport),
         {:ok, addr} <- address(host) do
      peer_rows(node, addr, port, dist_port)
    else
      {:error, message} -> {:error, message}
      _ -> {:error, " has no ="}
    end
  end

  defp split_hostport("[" <> rest) do
    case String.split(rest, "]", parts: 2) do
      [ip6, ""] -> {:ok, ip6, nil}
      [ip6, ":" <> port] -> parse_port(ip6, port)
      _ -> {:error, ": unclosed ["}
    end
  end

  defp split_hostport(hostport) do
    case String.split(hostport, ":") do
      [host] -> {:ok, host, nil}
      [host, port] -> parse_port(host, port)
      _ -> {:error, ": write an IPv6 address as [addr]:port"}
    end
  end

  defp parse_port(host, port) do
    case Integer.parse(port) do
      {n, ""} -> {:ok, host, n}
      _ -> {:error, ".port: #{inspect(port)} is not a port number"}
    end
  end
end
