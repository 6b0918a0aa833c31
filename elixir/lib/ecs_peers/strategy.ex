defmodule EcsPeers.Strategy do
  @moduledoc """
  A libcluster strategy that clusters nodes running as ECS tasks (or registered in Cloud Map) in
  **any number of regions**: a node in eu-west-2 connects to the nodes in us-west-2 too, as long
  as the VPCs are peered.

  It polls the ECS API (ListTasks → DescribeTasks) and/or Cloud Map (DiscoverInstances) for every
  configured source, concurrently, in native code on its own threads (no scheduler is ever
  blocked), merges the peers into one list, and connects to all of them with libcluster's
  `connect_nodes/4`. A node is disconnected only when a *complete, successful* poll of its source
  no longer lists it: a throttled call, a 5xx, a timeout or an unreachable region keeps every node
  connected, and is logged.

  ## Phoenix: `config/runtime.exs`

      import Config

      if config_env() == :prod do
        config :libcluster,
          topologies: [
            ecs: [
              strategy: EcsPeers.Strategy,
              config: [
                polling_interval: 5_000,
                sources: [
                  [type: :ecs, region: "eu-west-2", cluster: System.fetch_env!("ECS_CLUSTER"),
                   service: System.fetch_env!("ECS_SERVICE")],
                  [type: :ecs, region: "us-west-2", cluster: System.fetch_env!("ECS_CLUSTER"),
                   service: System.fetch_env!("ECS_SERVICE")]
                ]
              ]
            ]
          ]
      end

  and in `lib/my_app/application.ex`, before the PubSub and the Endpoint:

      {Cluster.Supervisor, [Application.get_env(:libcluster, :topologies, []), [name: MyApp.ClusterSupervisor]]}

  Releases need long names with the task's IP: `RELEASE_DISTRIBUTION=name` and
  `RELEASE_NODE=my_app@<task private ip>` (in `rel/env.sh.eex`). The node basename (`my_app`) is
  taken from the running node unless `node_basename` or `node_name` is given, and the running node
  is never connected to itself.

  ECS on EC2 (bridge or host network mode), and any fleet that should need one open port: start
  the VM with `-start_epmd false -epmd_module Elixir.EcsPeers.Epmd` (README, "ECS on EC2, and
  Erlang distribution without EPMD"). Nodes are then `my_app-<task id>@<instance ip>` in bridge
  and host mode (the basename is still `my_app`), and on every update that changes them the
  strategy hands each peer's address and port (the mapped host port in bridge mode) to
  `EcsPeers.Epmd.put_peers/1` before it connects.

  ## Configuration

  The keys are validated when the strategy starts; a bad key or value stops it from starting, with
  a message naming the key, the value and what is expected (for example
  `sources[0].region: "eu-west" is not an AWS region name; expected e.g. "eu-west-2"`).
  Sources are keyword lists (or maps); atoms and strings are both accepted for values.

  | scope | key | type | default | meaning |
  | --- | --- | --- | --- | --- |
  | top | `sources` | list of sources | required | Where peers come from: ECS and Cloud Map sources in any regions, merged into one namespace. |
  | top | `node_basename` | string | - | Node names are `<node_basename>@<ip>`. One of node_basename or node_name is required. |
  | top | `node_name` | template | - | Node name template instead of node_basename, e.g. `app@{ip}` or `app@ip-{ip_dashed}.ec2.internal`. Placeholders: {ip}, {ip_dashed}, {region}, {task_id} (the last part of the task ARN). |
  | top | `node_names` | config or epmd | config | `epmd`: name each peer name@ip by what its EPMD (port 4369) has registered: its only name, or else the one equal to node_basename; a peer with several names and none chosen is left out (with a warning). |
  | top | `distribution_port` | integer 1..65535 | 4370 | The port every node's Erlang distribution listens on: ECS_PEERS_DIST_PORT when set (EcsPeers.Epmd reads it too), else 4370. ECS on EC2 (bridge or host network mode, no ENI): a task's peer is its instance's private IP and the hostPort its container maps this port to; a task with no such mapping is skipped (and reported). Its node name is `<node_basename>-<task id>@<instance ip>`. |
  | top | `polling_interval` | duration | 5s | Time between polls (milliseconds as an integer, or a string like `5s`, `500ms`, `1m`). At least 100ms. |
  | top | `jitter` | number 0..1 | 0.2 | Each wait is polling_interval scaled by a random factor in [1-jitter, 1+jitter], so a fleet does not poll in lock-step. |
  | top | `poll_timeout` | duration | 20s | Longest one source's poll may take; a slower poll fails (and keeps the source's last-known peers). |
  | top | `max_attempts` | integer 1..10 | 3 | AWS SDK attempts per API call (1 = no retries). |
  | top | `endpoint_url` | URL | - | Send every AWS call to this endpoint (an emulator, a VPC endpoint). Defaults to AWS_ENDPOINT_URL, else AWS itself. |
  | top | `draining` | boolean | true | Keep a task that has left the RUNNING list as a (draining) peer until ECS reports it STOPPED. |
  | top | `local_node` | string | - | This node's name; it is left out of the peers. Defaults to the running node (the strategy) or RELEASE_NODE (the CLI). |
  | top | `local_ip` | IP address | - | This node's IP; the peer at this IP (unless reported with a distribution port of its own) is left out of the peers. Filled from the task metadata when a source uses cluster "auto". |
  | top | `metadata_url` | URL | - | The task metadata endpoint v4, for cluster "auto". Defaults to ECS_CONTAINER_METADATA_URI_V4, which the ECS agent sets. |
  | ecs | `type` | "ecs" | required | An ECS source: running tasks of one cluster. |
  | ecs | `region` | AWS region | required | The cluster's region, e.g. `eu-west-2` (optional when cluster is an ARN or "auto"). |
  | ecs | `cluster` | name, ARN or "auto" | required | The ECS cluster. "auto": this task's own cluster and region, from the task metadata endpoint; then service defaults to the task's service (EC2) or family (Fargate). |
  | ecs | `service` | name or ARN | - | Only tasks of this service (ListTasks serviceName, and each task's group is checked to be `service:<name>`). |
  | ecs | `family` | string | - | Only tasks of this task-definition family. |
  | ecs | `container` | string | - | Only tasks that have a container of this name; its network interface is used when the task has no ENI attachment. |
  | cloudmap | `type` | "cloudmap" | required | A Cloud Map source: registered instances of one service (DiscoverInstances). |
  | cloudmap | `region` | AWS region | required | The namespace's region. |
  | cloudmap | `namespace` | string | required | The Cloud Map namespace name, e.g. `internal.local`. |
  | cloudmap | `service` | string | required | The Cloud Map service name. |
  | cloudmap | `health` | healthy, all or healthy_or_else_all | healthy | Which instances to return, by health status. |
  | cloudmap | `query` | map of string to string | - | Only instances whose custom attributes match all of these (DiscoverInstances QueryParameters). |

  ## What it logs and measures

  Logs carry libcluster's prefix, `[libcluster:<topology>]`: libcluster logs each connect and
  disconnect; this strategy warns when a source starts failing (with the reason and the fix) and
  when it recovers, when the same IP is reported by two regions (overlapping VPC CIDRs, never
  connected), and when a source's running tasks cannot be peers (e.g. a bridge-mode container with
  no binding for the distribution port), with the fix. These are the core's membership events, with the core's wording: the same ones
  `ecs-peers watch` prints.

  When `:telemetry` is loaded it emits:

  - `[:ecs_peers, :poll, :stop]`, measurements `%{duration: native_time, peers:, added:,
    removed:, api_calls:, failing_sources:}`, metadata `%{topology:, sources: [status]}`;
  - `[:ecs_peers, :source, :error]`, measurements `%{consecutive_failures:}`, metadata
    `%{topology:, source:, kind:, error:}`, for each failing source on each poll.

  ## Leaving

  When this node's own task has been seen by a source and then disappears from it (its task is
  stopping), the node stops connecting to its peers, so it does not pull itself back into the
  cluster while it shuts down (libcluster issue #202). The core decides this (the update's
  `left`); the strategy only stops connecting.
  """

  use GenServer
  use Cluster.Strategy

  require Logger

  alias Cluster.Strategy.State

  defstruct [
    :cluster,
    :config,
    :poller,
    :tag,
    :timings,
    :membership,
    poll: 0,
    members: MapSet.new(),
    last_update: nil,
    dial: nil
  ]

  @impl Cluster.Strategy
  def start_link([%State{} = state]), do: GenServer.start_link(__MODULE__, state)

  @impl GenServer
  def init(%State{} = cluster) do
    cluster = %State{cluster | meta: cluster.meta || MapSet.new()}
    config = cluster.config

    with {:ok, timings} <- EcsPeers.validate(config),
         {:ok, poller, tag} <- start_poller(config) do
      schedule_watchdog(timings)

      {:ok,
       %__MODULE__{
         cluster: cluster,
         config: config,
         poller: poller,
         tag: tag,
         timings: timings,
         last_update: System.monotonic_time(:millisecond)
       }}
    else
      {:error, message} ->
        Logger.error(
          "[libcluster:#{cluster.topology}] EcsPeers.Strategy cannot start: #{message}"
        )

        {:stop, {:invalid_config, message}}
    end
  end

  @impl GenServer
  def handle_info({:ecs_peers, tag, {:update, update}}, %__MODULE__{tag: tag} = s) do
    s = %{s | last_update: System.monotonic_time(:millisecond)}
    update = latest(s, tag, update)
    report(s, update)
    {:noreply, apply_update(s, update)}
  end

  def handle_info(:watchdog, %__MODULE__{} = s) do
    silent = System.monotonic_time(:millisecond) - s.last_update

    s =
      if silent > stall_limit(s.timings) do
        warn(s, "no poll result for #{silent} ms; restarting the poller")
        EcsPeers.native(fn -> EcsPeers.Native.stop(s.poller) end)

        case start_poller(s.config) do
          {:ok, poller, tag} ->
            %{s | poller: poller, tag: tag, last_update: System.monotonic_time(:millisecond)}

          {:error, message} ->
            warn(s, "cannot restart the poller: #{message}")
            s
        end
      else
        s
      end

    schedule_watchdog(s.timings)
    {:noreply, s}
  end

  # Updates of a replaced poller, and anything else, are ignored.
  def handle_info(_other, s), do: {:noreply, s}

  @impl GenServer
  def terminate(_reason, %__MODULE__{poller: poller}) do
    EcsPeers.native(fn -> EcsPeers.Native.stop(poller) end)
    :ok
  end

  defp start_poller(config) do
    tag = :erlang.unique_integer([:positive])

    this = EcsPeers.this_node()

    case EcsPeers.native(fn -> EcsPeers.Native.start(config, this, self(), tag) end) do
      {:ok, poller} -> {:ok, poller, tag}
      {:error, message} -> {:error, message}
    end
  end

  # When several updates are queued (a slow connect), each is reported (its events logged, its
  # telemetry emitted), but only the newest is acted on: every update is self-contained.
  defp latest(s, tag, update) do
    receive do
      {:ecs_peers, ^tag, {:update, newer}} ->
        report(s, update)
        latest(s, tag, newer)
    after
      0 -> update
    end
  end

  # The membership comes whole in every update (`nodes`, one shared binary) with its fingerprint;
  # atoms are made only when it differs from the one held. The core leaves this node out of it,
  # and says when this node has left its source (`left`): then nobody is connected.
  defp apply_update(s, update) do
    s =
      if update.membership == s.membership,
        do: s,
        else: %{s | membership: update.membership, members: members(update.nodes)}

    want = if update.left, do: MapSet.new(), else: s.members
    s = put_dial(s, update)
    %{s | cluster: reconcile(s.cluster, want), poll: update.poll}
  end

  # Where each peer is dialled (the update's `dial`: node, address, port per line, as the core
  # reported them) goes to the EPMD-less distribution bridge before any connection is made, so
  # a node that uses `-epmd_module Elixir.EcsPeers.Epmd` reaches each peer at the address and
  # port ECS reports (the mapped host port in bridge mode). Handed over only when it changed;
  # `:ignored` when this VM does not use EcsPeers.Epmd.
  defp put_dial(%{dial: dial} = s, %{dial: dial}), do: s

  defp put_dial(s, %{dial: dial}) do
    peers =
      for line <- :binary.split(dial, "\n", [:global]), line != "" do
        [node, host, port] = :binary.split(line, "\t", [:global])
        %{node: node, host: host, port: if(port == "", do: nil, else: String.to_integer(port))}
      end

    case EcsPeers.Epmd.put_peers(peers) do
      result when result in [:ok, :ignored] ->
        %{s | dial: dial}

      {:error, message} ->
        warn(s, "cannot hand the peers' addresses to EcsPeers.Epmd: #{message}")
        s
    end
  rescue
    e ->
      warn(s, "cannot hand the peers' addresses to EcsPeers.Epmd: #{Exception.message(e)}")
      s
  catch
    :exit, reason ->
      warn(s, "cannot hand the peers' addresses to EcsPeers.Epmd: #{inspect(reason)}")
      s
  end

  defp put_dial(s, _update), do: s

  # Atoms are made only for the nodes handed to connect_nodes/4.
  defp members(""), do: MapSet.new()

  defp members(nodes) do
    for n <- :binary.split(nodes, "\n", [:global]), into: MapSet.new(), do: String.to_atom(n)
  end

  # libcluster's contract: disconnect what is gone, connect the full desired list; failed
  # disconnects stay in meta (tried again), failed connects leave it (tried again next poll).
  defp reconcile(%State{} = c, want) do
    removed = MapSet.difference(c.meta, want) |> MapSet.to_list()

    meta =
      case safely(c, fn ->
             Cluster.Strategy.disconnect_nodes(c.topology, c.disconnect, c.list_nodes, removed)
           end) do
        {:error, bad} -> MapSet.union(want, MapSet.new(bad, fn {n, _} -> n end))
        _ -> want
      end

    meta =
      case safely(c, fn ->
             Cluster.Strategy.connect_nodes(
               c.topology,
               c.connect,
               c.list_nodes,
               MapSet.to_list(want)
             )
           end) do
        {:error, bad} -> MapSet.difference(meta, MapSet.new(bad, fn {n, _} -> n end))
        _ -> meta
      end

    %State{c | meta: meta}
  end

  # A connect/disconnect MFA that raises (e.g. returns something libcluster does not expect) is
  # logged, not allowed to crash the strategy (and with it, after 3 restarts, the application).
  defp safely(c, fun) do
    fun.()
  rescue
    e ->
      Logger.error(
        "[libcluster:#{c.topology}] connect/disconnect failed: #{Exception.message(e)}"
      )

      :ok
  end

  # The core's membership events, logged as they come (warnings for failures and conflicts),
  # then the poll's telemetry.
  defp report(s, update) do
    for event <- update.events do
      case event.event do
        e when e in ["source_failing", "conflict_found", "tasks_skipped"] ->
          warn(s, event.message)

        _ ->
          Logger.info("[libcluster:#{s.cluster.topology}] #{event.message}")
      end
    end

    emit_poll(s, update)
  end

  defp emit_poll(s, update) do
    if Code.ensure_loaded?(:telemetry) do
      meta = %{topology: s.cluster.topology, sources: update.sources}

      measurements = %{
        duration: System.convert_time_unit(update.duration_ms, :millisecond, :native),
        peers: update.peer_count,
        added: length(update.added),
        removed: length(update.removed),
        api_calls: Enum.reduce(update.sources, 0, &(&1.api_calls + &2)),
        failing_sources: Enum.count(update.sources, &(not &1.ok and not &1.pending))
      }

      apply(:telemetry, :execute, [[:ecs_peers, :poll, :stop], measurements, meta])

      for src <- update.sources, not src.ok and not src.pending do
        apply(:telemetry, :execute, [
          [:ecs_peers, :source, :error],
          %{consecutive_failures: src.consecutive_failures},
          %{topology: s.cluster.topology, source: src.id, kind: src.error_kind, error: src.error}
        ])
      end
    end

    Logger.debug(fn ->
      "[libcluster:#{s.cluster.topology}] poll #{update.poll}: #{update.peer_count} peers, " <>
        "#{Enum.count(update.sources, & &1.ok)}/#{length(update.sources)} sources ok"
    end)
  end

  defp warn(s, message), do: Logger.warning("[libcluster:#{s.cluster.topology}] #{message}")

  defp stall_limit(%{polling_interval: i, poll_timeout: t}), do: max(3 * i + t, 10_000)

  defp schedule_watchdog(timings), do: Process.send_after(self(), :watchdog, stall_limit(timings))
end
