# One "ECS task" of the end-to-end test bed: a BEAM node that clusters with libcluster's
# Cluster.Supervisor and EcsPeers.Strategy, and reports what it sees to a status file every 100 ms
# (its Node.list, whether the strategy runs, its last poll number, how often it was restarted).
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

config = naming ++ [
  endpoint_url: endpoint,
  polling_interval: String.to_integer(interval),
  poll_timeout: 2_000,
  max_attempts: 1,
  jitter: 0.1,
  sources: sources
]

{:ok, sup} =
  Cluster.Supervisor.start_link([[ecs: [strategy: EcsPeers.Strategy, config: config]], [name: E2E.Cluster]])

report = fn report, last_pid, restarts ->
  {pid, poll} =
    case Supervisor.which_children(sup) do
      [{:ecs, pid, _, _}] when is_pid(pid) -> {pid, :sys.get_state(pid).poll}
      _ -> {nil, 0}
    end

  restarts = if last_pid && pid && pid != last_pid, do: restarts + 1, else: restarts
  nodes = Node.list() |> Enum.map(&~s("#{&1}")) |> Enum.sort() |> Enum.join(",")

  File.write!(
    status_file <> ".tmp",
    ~s({"node":"#{node()}","nodes":[#{nodes}],"strategy":#{pid != nil},"poll":#{poll},"restarts":#{restarts}})
  )

  File.rename!(status_file <> ".tmp", status_file)
  Process.sleep(100)
  report.(report, pid || last_pid, restarts)
end

report.(report, nil, 0)
