# One "ECS task" of the end-to-end test bed: a BEAM node that clusters with libcluster's
# Cluster.Supervisor and EcsPeers.Strategy (or, with E2E_CLUSTER=child, with the libcluster-free
# child EcsPeers.Cluster), started in an application's supervision tree as a release starts it
# (so SIGTERM, init:stop, shuts it down in order), and reports what it sees to a status file every 100 ms:
# its Node.list, whether the strategy runs, how often it was restarted, and from the strategy's
# documented `[:ecs_peers, :poll, :stop]` telemetry: the polls so far, the peers of the last poll and
# each source's id, ok and peers, and with fleet-shared polling (E2E_SHARE_POLLING=1) who
# polls it: `poller` (nil: this node), `received_from` (nil: polled here), `received_at` and
# `shared_dropped` and `poller_silent`, as the telemetry metadata carries them. From
# `EcsPeers.status/1`: `known`, the peers' node names the strategy's last poll found,
# `known_poll`, that poll's number (the core's count, read in the same call), and `known_at`,
# when that call began (OS time, ms). Node.list alone cannot tell that a node's own poll found a
# peer: a new node that dials the others shows in their Node.list before their polls list its
# task. From the same call, the cluster as the strategy sees it: `expected`, `connected` and
# `unreachable` (each `%{node, code, reason, fix, since, polls}`); and from the
# `[:ecs_peers, :cluster, :connections]` telemetry, `connections`: its counts of the three and
# its unreachable peers (`unreachable_peers`). The call is
# made by a process of its own: it waits while the strategy connects nodes
# (seconds, to an address that drops packets), and the status file must not.
#
#   elixir --name app@IP --cookie C -pa EBIN tests/e2e/node.exs STATUS_FILE ENDPOINT INTERVAL_MS
[status_file, endpoint, interval] = System.argv()
Logger.configure(level: :info)

# E2E_NODE_NAMES=epmd: name peers by what their EPMD reports instead of the configured basename.
naming = if System.get_env("E2E_NODE_NAMES") == "epmd", do: [node_names: "epmd"], else: []

# E2E_SOURCES: the sources as Elixir source text, to override the default below.
sources =
  case System.get_env("E2E_SOURCES", "") do
    "" ->
      [
        [type: :ecs, region: "eu-west-2", cluster: "web", service: "api"],
        [type: :ecs, region: "us-west-2", cluster: "web", service: "api"]
      ]

    text ->
      text |> Code.eval_string() |> elem(0)
  end

# E2E_SHARE_POLLING=1: `share_polling: true` (fleet-shared polling); 0: `share_polling: false`;
# unset: the key is not passed at all (its default).
sharing =
  case System.get_env("E2E_SHARE_POLLING", "") do
    "1" -> [share_polling: true]
    "0" -> [share_polling: false]
    "" -> []
    other -> raise "E2E_SHARE_POLLING=#{inspect(other)}: expected 1 (on), 0 (off) or unset (the key's default)"
  end

# E2E_PROBE_MS: `region_probe_interval` in ms (sources with `regions`); unset: the default.
probe =
  case System.get_env("E2E_PROBE_MS", "") do
    "" -> []
    ms -> [region_probe_interval: String.to_integer(ms)]
  end

config = naming ++ sharing ++ probe ++ [
  endpoint_url: endpoint,
  polling_interval: String.to_integer(interval),
  poll_timeout: 2_000,
  max_attempts: 1,
  jitter: 0.1,
  sources: sources
]

# The strategy's poll telemetry: what a user's handler sees (not the strategy's internal state).
polls = :atomics.new(1, [])
# What the report loop writes, kept in a public ETS table (written by the telemetry handler and
# the peers reader below): replacing a persistent term runs a global GC, too often for this.
:ets.new(:e2e, [:named_table, :public, read_concurrency: true])
:ets.insert(:e2e, {:last_poll, %{peers: 0, sources: []}})
:ets.insert(:e2e, {:connections, nil})

:telemetry.attach(
  "e2e-connections",
  [:ecs_peers, :cluster, :connections],
  fn _event, measurements, metadata, _ ->
    :ets.insert(:e2e, {:connections, Map.put(measurements, :unreachable_peers, metadata.unreachable)})
  end,
  nil
)

:telemetry.attach(
  "e2e-status",
  [:ecs_peers, :poll, :stop],
  fn _event, measurements, metadata, _ ->
    :atomics.add(polls, 1, 1)

    sources =
      for src <- metadata.sources,
          do: %{
            id: Map.get(src, :id),
            region: Map.get(src, :region),
            ok: Map.get(src, :ok),
            peers: Map.get(src, :peers),
            api_calls: Map.get(src, :api_calls),
            poller: Map.get(src, :poller),
            received_from: Map.get(src, :received_from),
            received_at: Map.get(src, :received_at),
            shared_dropped: Map.get(src, :shared_dropped),
            poller_silent: Map.get(src, :poller_silent),
            absent: Map.get(src, :absent)
          }

    :ets.insert(:e2e, {:last_poll, %{peers: measurements.peers, sources: sources}})
  end,
  nil
)

# E2E_CLUSTER=child: EcsPeers.Cluster in the app's tree (Phoenix >= 1.7.11, no libcluster);
# otherwise libcluster's Cluster.Supervisor with the strategy.
child = System.get_env("E2E_CLUSTER") == "child"

defmodule E2E.App do
  use Application

  def start(_type, [child, config]) do
    clustering =
      if child,
        do: {EcsPeers.Cluster, config},
        else: {Cluster.Supervisor, [[ecs: [strategy: EcsPeers.Strategy, config: config]], [name: E2E.Cluster]]}

    Supervisor.start_link([clustering], strategy: :one_for_one, name: E2E.Sup)
  end
end

:ok = :application.load({:application, :e2e, [description: ~c"e2e", vsn: ~c"0", modules: [E2E.App],
                                              registered: [], applications: [:kernel, :stdlib, :logger, :ecs_peers],
                                              mod: {E2E.App, [child, config]}]})
{:ok, _} = Application.ensure_all_started(:e2e)

# The clustering process: the strategy under Cluster.Supervisor, or the child itself.
clustering = fn ->
  try do
    case Supervisor.which_children(if child, do: E2E.Sup, else: E2E.Cluster) do
      [{_, pid, _, _}] when is_pid(pid) -> pid
      _ -> nil
    end
  catch
    :exit, _ -> nil
  end
end

:ets.insert(:e2e, {:known, %{known: [], known_poll: nil, known_at: 0, expected: [], connected: [], unreachable: []}})

spawn(fn ->
  read_known = fn read_known ->
    at = System.os_time(:millisecond)

    case clustering.() do
      nil ->
        :ok

      pid ->
        case EcsPeers.status(pid) do
          {:ok, st} ->
            :ets.insert(:e2e, {:known, %{known: st.peers, known_poll: st.poll, known_at: at,
                                         expected: st.expected, connected: st.connected,
                                         unreachable: st.unreachable}})
          {:error, _} -> :ok
        end
    end

    Process.sleep(100)
    read_known.(read_known)
  end

  read_known.(read_known)
end)

json = fn
  _json, v when is_binary(v) -> ~s(") <> String.replace(String.replace(v, "\\", "\\\\"), ~s("), ~s(\\")) <> ~s(")
  _json, v when is_boolean(v) or is_integer(v) -> to_string(v)
  _json, nil -> "null"
  json, v when is_atom(v) -> json.(json, Atom.to_string(v))
  json, v when is_list(v) -> "[" <> Enum.map_join(v, ",", &json.(json, &1)) <> "]"
  json, v when is_map(v) -> "{" <> Enum.map_join(v, ",", fn {k, x} -> json.(json, to_string(k)) <> ":" <> json.(json, x) end) <> "}"
end

report = fn report, last_pid, restarts ->
  pid = clustering.()

  restarts = if last_pid && pid && pid != last_pid, do: restarts + 1, else: restarts
  [{:last_poll, last}] = :ets.lookup(:e2e, :last_poll)
  [{:known, known}] = :ets.lookup(:e2e, :known)
  [{:connections, connections}] = :ets.lookup(:e2e, :connections)

  status = %{
    node: node(),
    nodes: Node.list() |> Enum.map(&Atom.to_string/1) |> Enum.sort(),
    strategy: pid != nil,
    poll: :atomics.get(polls, 1),
    restarts: restarts,
    peers: last.peers,
    sources: last.sources,
    known: known.known,
    known_poll: known.known_poll,
    known_at: known.known_at,
    expected: known.expected,
    connected: known.connected,
    unreachable: known.unreachable,
    connections: connections
  }

  File.write!(status_file <> ".tmp", json.(json, status))
  File.rename!(status_file <> ".tmp", status_file)
  Process.sleep(100)
  report.(report, pid || last_pid, restarts)
end

report.(report, nil, 0)
