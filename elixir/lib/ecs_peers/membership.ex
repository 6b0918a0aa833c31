defmodule EcsPeers.Membership do
  @moduledoc false
  # The one membership rule, served to both ways of clustering: `EcsPeers.Strategy` (libcluster)
  # and `EcsPeers.Cluster` (a plain child, no libcluster). Both are thin: they start this process
  # with their own `links` (how a list of nodes is connected or disconnected, and the log
  # prefix), and everything else is decided here, once:
  #
  # - a poller per process (the NIF), restarted by a watchdog when it falls silent;
  # - every update's events (the core's: source_failing / source_recovered / conflict_found /
  #   local_left) logged with the core's sentence, and the poll's telemetry emitted;
  # - only the newest of several queued updates is acted on (each is self-contained);
  # - the nodes to connect are the update's membership (the core leaves this node out of it),
  #   minus the peers that are draining (a leaving node is never pulled back in); a node is
  #   disconnected only when the core no longer lists it at all (a draining peer stays
  #   connected until ECS reports its task STOPPED, by which time its BEAM has left);
  # - when the core says this node's task has left (`left`, the local_left event), this node
  #   leaves the cluster itself, at once, with `:global.disconnect/0`, and connects to nobody
  #   any more;
  # - and when this process is stopped because the VM stops (init:stop, e.g. on ECS's SIGTERM),
  #   it leaves the same way, before the distribution goes down link by link;
  # - with `share_polling`, this process is the member of the sharing group (`EcsPeers.Sharing`:
  #   who is in it goes to the core, the results the core hands out go to the other members);
  #   it leaves the group before it leaves the cluster, and on terminate;
  # - `status/1` answers with the last update's sources and peers and the sharing members.
  #
  # Why: OTP's global (prevent_overlapping_partitions, on by default since OTP 25) treats a link
  # lost between two nodes that are both up as a partition in the making: when A and B lose
  # their link, A tells every node it still sees that it lost B, and each of them, still
  # connected to B, disconnects B, although B is healthy (and B's global does the same to A).
  # The test bed's logs (tests/e2e/soak.py) showed both ways it happens: a peer disconnecting a
  # leaving node that is still up (its poll saw the task gone first), within 30 ms followed by
  # the others cutting that peer; and a leaving node dropping its peers one by one. Hence: peers
  # do not cut a draining node (it is gone by the time ECS reports STOPPED), and a leaving node
  # leaves with `:global.disconnect/0` (OTP 25.1+), which isolates it in global first, so the
  # others read its going as a node leaving, not as a partition.

  use GenServer

  require Logger

  @typedoc """
  How a list of nodes is connected and disconnected: `{module, context}`; `module.connect(context,
  nodes)` and `module.disconnect(context, nodes)` return `:ok` or `{:error, [{node, reason}]}`
  (libcluster's contract).
  """
  @type links :: {module(), term()}

  defstruct [
    :topology,
    :prefix,
    :links,
    :config,
    :poller,
    :tag,
    :timings,
    :membership,
    :dial,
    :sharing,
    poll: 0,
    members: MapSet.new(),
    connected: MapSet.new(),
    draining: MapSet.new(),
    left: false,
    last_update: nil,
    last: %{poll: 0, sources: [], nodes: nil, shared_dropped: 0}
  ]

  @doc false
  # opts: config (the keys of EcsPeers.Strategy), topology (atom), prefix (log prefix, e.g.
  # "libcluster:ecs"), links, and optionally GenServer options (name:).
  def start_link(opts, gen_opts \\ []), do: GenServer.start_link(__MODULE__, opts, gen_opts)

  @doc false
  def child_spec(opts), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}}

  @impl GenServer
  def init(opts) do
    # Trapping exits: terminate/2 runs when the supervisor stops this process (shutdown), so a
    # stopping node leaves the cluster before the distribution goes down.
    Process.flag(:trap_exit, true)
    s = struct!(__MODULE__, Keyword.take(opts, [:topology, :prefix, :links, :config]))

    with {:ok, timings} <- EcsPeers.validate(s.config),
         {:ok, poller, tag} <- start_poller(s.config) do
      schedule_watchdog(timings)

      {:ok,
       %{
         s
         | poller: poller,
           tag: tag,
           timings: timings,
           last_update: System.monotonic_time(:millisecond),
           sharing: EcsPeers.Sharing.start(s.topology, s.prefix, timings, poller)
       }}
    else
      {:error, message} ->
        Logger.error("[#{s.prefix}] #{Keyword.fetch!(opts, :who)} cannot start: #{message}")
        {:stop, {:invalid_config, message}}
    end
  end

  @impl GenServer
  def handle_info({:ecs_peers, tag, {:update, update}}, %__MODULE__{tag: tag} = s) do
    s = %{s | last_update: System.monotonic_time(:millisecond)}
    s = report(s, update)
    {s, update} = latest(s, tag, update)
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
            sharing = EcsPeers.Sharing.poller_started(s.sharing, poller)

            %{
              s
              | poller: poller,
                tag: tag,
                sharing: sharing,
                last_update: System.monotonic_time(:millisecond)
            }

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

  # The parent going away (trap_exit) stops this process (then terminate/2).
  def handle_info({:EXIT, _from, reason}, s), do: {:stop, reason, s}

  # Sharing's messages (group changes, results from other members); updates of a replaced
  # poller, and anything else, are ignored.
  def handle_info(other, s) do
    case EcsPeers.Sharing.handle_info(other, s.sharing, s.poller) do
      {:handled, sharing} -> {:noreply, %{s | sharing: sharing}}
      :unhandled -> {:noreply, s}
    end
  end

  @doc false
  # The last update's `sources` (each with `poller`/`received_from`: who polls it, whose result
  # was applied), its `peers` (node-name binaries, sorted), `poll` (its number), and `sharing`
  # (`EcsPeers.Sharing.status/1`, plus `core_dropped`: received results the core dropped that
  # named no source here or did not decode): `%{topology:, node:, poll:, sources:, peers:,
  # sharing:}`.
  def status(pid, timeout \\ 5_000), do: GenServer.call(pid, :status, timeout)

  @impl GenServer
  def handle_call(:status, _from, s) do
    peers =
      case s.last.nodes && EcsPeers.native(fn -> {:ok, EcsPeers.Native.names(s.last.nodes)} end) do
        {:ok, names} -> for n <- :binary.split(names, "\n", [:global]), n != "", do: n
        _ -> []
      end

    {:reply,
     %{
       topology: s.topology,
       node: Atom.to_string(node()),
       poll: s.last.poll,
       sources: s.last.sources,
       peers: peers,
       sharing: Map.put(EcsPeers.Sharing.status(s.sharing), :core_dropped, s.last.shared_dropped)
     }, s}
  end

  # Stopped while the VM stops (init:stop, which ECS's SIGTERM starts): this node leaves
  # global's cluster before the distribution goes down link by link. Nothing else is called (the
  # links' processes may be gone already). A crash, or a restart by the supervisor while the VM
  # runs on, does not leave (the process carries on).
  @impl GenServer
  def terminate(reason, %__MODULE__{poller: poller} = s) do
    EcsPeers.Sharing.leave(s.sharing, nil)
    EcsPeers.native(fn -> EcsPeers.Native.stop(poller) end)

    if shutdown?(reason) and vm_stopping?() and not s.left and MapSet.size(s.connected) > 0 and
         Node.alive?() do
      Logger.info("[#{s.prefix}] stopping; leaving the cluster")
      if global_disconnect?(), do: apply(:global, :disconnect, [])
    end

    :ok
  end

  def terminate(_reason, _s), do: :ok

  defp shutdown?(reason), do: reason == :shutdown or match?({:shutdown, _}, reason)

  defp vm_stopping?, do: match?({:stopping, _}, :init.get_status())

  # :global.disconnect/0 is OTP 25.1+ (kernel 8.5); before OTP 25, prevent_overlapping_partitions
  # is off by default and the links' disconnect is all there is.
  defp global_disconnect?, do: function_exported?(:global, :disconnect, 0)

  defp start_poller(config) do
    tag = :erlang.unique_integer([:positive])
    this = EcsPeers.this_node()

    case EcsPeers.native(fn -> EcsPeers.Native.start(config, this, self(), tag) end) do
      {:ok, poller} -> {:ok, poller, tag}
      {:error, message} -> {:error, message}
    end
  end

  # When several updates are queued (a slow connect), each is reported (its events logged, its
  # telemetry emitted, its draining peers noted), but only the newest is acted on: every update
  # is self-contained.
  defp latest(s, tag, update) do
    receive do
      {:ecs_peers, ^tag, {:update, newer}} -> latest(report(s, newer), tag, newer)
    after
      0 -> {s, update}
    end
  end

  # The membership comes whole in every update (`nodes`, a handle to the shared names) with its
  # fingerprint; the names are read, and atoms made, only when it differs from the one held. Draining peers are the core's
  # `draining` changes, kept until the core stops listing them (`removed`) or lists them anew.
  defp apply_update(s, update) do
    s =
      if update.membership == s.membership,
        do: s,
        else: with_members(s, update)

    # `left` stays set in the core until a source lists this node again; then it rejoins (and
    # joins the sharing group again).
    s =
      cond do
        update.left && not s.left -> leave(s)
        s.left and update.left == nil -> %{s | left: false, sharing: share_again(s)}
        true -> %{s | left: update.left != nil}
      end

    # A draining peer stays connected if it is, but is never connected anew: it is leaving the
    # cluster itself. Only a node the core no longer lists is disconnected.
    keep = if s.left, do: MapSet.new(), else: s.members

    join =
      if s.left or MapSet.size(s.draining) == 0,
        do: keep,
        else: MapSet.reject(keep, &(Atom.to_string(&1) in s.draining))

    s = put_dial(s, update)
    %{reconcile(s, keep, join) | poll: update.poll}
  end

  # Where each peer is dialled (the update's `dial`, a handle to lines of node, address and port
  # as the core reported them) goes to the EPMD-less distribution bridge before any connection
  # is made, so a node started with `-epmd_module Elixir.EcsPeers.Epmd` reaches each peer at the
  # address and port ECS reports (the mapped host port in bridge mode). Read and handed over
  # only when it changed (the NIF reuses the handle while the lines are the same; resource terms
  # compare equal when they are the same resource); `:ignored` when the VM does not use
  # EcsPeers.Epmd.
  defp share_again(s), do: EcsPeers.Sharing.join(s.sharing, s.poller)

  defp put_dial(%{dial: dial} = s, %{dial: dial}), do: s

  defp put_dial(s, %{dial: dial}) do
    with {:ok, lines} <- EcsPeers.native(fn -> {:ok, EcsPeers.Native.names(dial)} end),
         peers = dial_peers(lines),
         result when result in [:ok, :ignored] <- EcsPeers.Epmd.put_peers(peers) do
      %{s | dial: dial}
    else
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

  defp dial_peers(lines) do
    for line <- :binary.split(lines, "\n", [:global]), line != "" do
      [node, host, port] = :binary.split(line, "\t", [:global])
      %{node: node, host: host, port: if(port == "", do: nil, else: String.to_integer(port))}
    end
  end

  # This node leaves the cluster: global first isolates it, then disconnects every node it
  # knows, so no peer takes the going for a partition; then whatever global did not know
  # (hidden nodes) is disconnected through the links.
  defp leave(s) do
    s = %{s | sharing: EcsPeers.Sharing.leave(s.sharing, s.poller)}

    gone =
      if Node.alive?() and global_disconnect?(), do: apply(:global, :disconnect, []), else: []

    if gone != [] do
      Logger.info("[#{s.prefix}] left the cluster: disconnected from #{inspect(Enum.sort(gone))}")
    end

    reconcile(%{s | left: true}, MapSet.new(), MapSet.new())
  end

  # Atoms are made only for the nodes handed to connect/disconnect. The names cannot be read only
  # if the NIF breaks: then the membership held is kept (nobody is disconnected for it).
  defp with_members(s, update) do
    case EcsPeers.native(fn -> {:ok, EcsPeers.Native.names(update.nodes)} end) do
      {:ok, names} ->
        members =
          for n <- :binary.split(names, "\n", [:global]),
              n != "",
              into: MapSet.new(),
              do: String.to_atom(n)

        %{s | membership: update.membership, members: members}

      {:error, message} ->
        warn(s, "cannot read the peers' node names: #{message}")
        s
    end
  end

  # libcluster's contract: disconnect what is gone (connected, and no longer in `keep`), connect
  # the full list to join; failed disconnects stay in `connected` (tried again), failed connects
  # leave it (tried again next poll).
  defp reconcile(%__MODULE__{links: {mod, ctx}} = s, keep, join) do
    removed = MapSet.difference(s.connected, keep) |> MapSet.to_list()
    connected = s.connected |> MapSet.intersection(keep) |> MapSet.union(join)

    connected =
      case safely(s, fn -> mod.disconnect(ctx, removed) end) do
        {:error, bad} -> MapSet.union(connected, MapSet.new(bad, fn {n, _} -> n end))
        _ -> connected
      end

    connected =
      case safely(s, fn -> mod.connect(ctx, MapSet.to_list(join)) end) do
        {:error, bad} -> MapSet.difference(connected, MapSet.new(bad, fn {n, _} -> n end))
        _ -> connected
      end

    %{s | connected: connected}
  end

  # A connect/disconnect function that raises (e.g. returns something libcluster does not
  # expect) is logged, not allowed to crash this process (and with it, after 3 restarts, the
  # application).
  defp safely(s, fun) do
    fun.()
  rescue
    e ->
      Logger.error("[#{s.prefix}] connect/disconnect failed: #{Exception.message(e)}")
      :ok
  end

  # The core's membership events, logged as they come (warnings for failures, conflicts and a
  # silent poller), then the poll's telemetry; the results this node polled for the sharing
  # group are sent on (every update's: a source polled in a skipped round may not be in the
  # newest); the draining peers are noted, and the update's status is kept for status/1.
  defp report(s, update) do
    for event <- update.events do
      case event.event do
        e when e in ["source_failing", "conflict_found", "tasks_skipped", "poller_silent"] ->
          warn(s, event.message)

        _ ->
          Logger.info("[#{s.prefix}] #{event.message}")
      end
    end

    emit_poll(s, update)
    EcsPeers.Sharing.forward(s.sharing, update)

    s = %{
      s
      | last: %{
          poll: update.poll,
          sources: update.sources,
          nodes: update.nodes,
          shared_dropped: Map.get(update, :shared_dropped, 0)
        }
    }

    names = fn key -> MapSet.new(Map.get(update, key, []), & &1.node) end

    draining =
      case {Map.get(update, :draining, []), MapSet.size(s.draining)} do
        {[], 0} ->
          s.draining

        _ ->
          s.draining
          |> MapSet.difference(names.(:removed))
          |> MapSet.difference(names.(:added))
          |> MapSet.union(names.(:draining))
      end

    %{s | draining: draining}
  end

  defp emit_poll(s, update) do
    if Code.ensure_loaded?(:telemetry) do
      meta = %{topology: s.topology, sources: update.sources}

      measurements = %{
        duration: System.convert_time_unit(update.duration_ms, :millisecond, :native),
        peers: update.peer_count,
        added: length(update.added),
        removed: length(update.removed),
        api_calls: Enum.reduce(update.sources, 0, &(&1.api_calls + &2)),
        failing_sources: Enum.count(update.sources, &(not &1.ok and not &1.pending)),
        sharing_with: Map.get(update, :sharing_with, 0)
      }

      apply(:telemetry, :execute, [[:ecs_peers, :poll, :stop], measurements, meta])

      for src <- update.sources, not src.ok and not src.pending do
        apply(:telemetry, :execute, [
          [:ecs_peers, :source, :error],
          %{consecutive_failures: src.consecutive_failures},
          %{topology: s.topology, source: src.id, kind: src.error_kind, error: src.error}
        ])
      end
    end

    Logger.debug(fn ->
      "[#{s.prefix}] poll #{update.poll}: #{update.peer_count} peers, " <>
        "#{Enum.count(update.sources, & &1.ok)}/#{length(update.sources)} sources ok"
    end)
  end

  defp warn(s, message), do: Logger.warning("[#{s.prefix}] #{message}")

  defp stall_limit(%{polling_interval: i, poll_timeout: t}), do: max(3 * i + t, 10_000)

  defp schedule_watchdog(timings), do: Process.send_after(self(), :watchdog, stall_limit(timings))
end
