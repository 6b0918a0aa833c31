defmodule EcsPeers.Membership do
  @moduledoc false
  # The one membership process, serving both ways of clustering: `EcsPeers.Strategy`
  # (libcluster) and `EcsPeers.Cluster` (a plain child, no libcluster). Both are thin: they start
  # this process with their own `links` (how a list of nodes is connected or disconnected, and
  # the log prefix). This process carries out; the decisions are `EcsPeers.Membership.Rules`
  # (plain functions, unit-tested without a server):
  #
  # - the config is validated once (`EcsPeers.Native.config/2`); the poller (the NIF) is started
  #   with it, and restarted with it by a watchdog when it falls silent;
  # - every update's events (the core's) are logged with the core's sentence, and its telemetry
  #   emitted (`EcsPeers.Telemetry`); only the newest of several queued updates is acted on
  #   (each is self-contained);
  # - the nodes to connect and disconnect, leaving and rejoining: `Rules`; each peer not yet
  #   connected is connected in a process of its own, so one that does not answer (7 s of
  #   net_setuptime) holds up no other;
  # - where each peer is dialled goes to the EPMD-less bridge (`EcsPeers.Epmd`) before any
  #   connection is made;
  # - with `share_polling`, this process is the member of the sharing group (`EcsPeers.Sharing`);
  #   it leaves the group before it leaves the cluster, and on terminate;
  # - it is registered under its topology (`EcsPeers.Status`), and `status/1` answers with the
  #   last update's sources and peers and the sharing members;
  # - the cluster explains itself: after each update, the peers it should be connected to
  #   (`expected`) and is not are gaps (`Rules.gaps/5`); a peer unconnected for more than two
  #   polls is diagnosed off this process (`EcsPeers.Membership.Diagnosis`, a task: the core's
  #   doctor checks on the NIF's runtime, only for a peer the poller listed, at its listed
  #   address; one at a time per peer), which logs the diagnosis, with its fix, once and again
  #   only when it changes; a node alone while discovery lists others logs an error.
  #   `status/1` and the telemetry carry expected, connected and unreachable.

  use GenServer

  require Logger

  @typedoc """
  How a list of nodes is connected and disconnected: `{module, context}`; `module.connect(context,
  nodes)` and `module.disconnect(context, nodes)` return `:ok` or `{:error, [{node, reason}]}`
  (libcluster's contract).
  """
  @type links :: {module(), term()}

  # Grouped by concern: who this is (topology, prefix, links, and `status_table`, where
  # status/1 reads what it publishes), the validated config
  # (`config`: the NIF's handle, `settings`: what Elixir reads of it), the running poller, what
  # was read of the update's handles (`held`), the cluster as this node sees it (`cluster`),
  # the last update for status/1 (`last`), and the sharing group's state (`sharing`).
  defstruct [
    :topology,
    :prefix,
    :links,
    :status_table,
    :config,
    :settings,
    :sharing,
    poller: %{ref: nil, tag: nil, heard_at: nil},
    held: %{membership: nil, members: MapSet.new(), dial: nil},
    cluster: %{
      connected: MapSet.new(),
      draining: MapSet.new(),
      left: false,
      expected: MapSet.new(),
      gaps: %{},
      alone: nil,
      # Whether this node takes part yet (Rules.view/5), and the sources answered so far.
      whole: false,
      answered: MapSet.new(),
      started: nil
    },
    last: %{poll: 0, sources: [], shared_dropped: 0}
  ]

  alias EcsPeers.Membership.Rules

  @doc false
  # opts: config (the keys of EcsPeers.Strategy), topology (atom), prefix (log prefix, e.g.
  # "libcluster:ecs"), who (the module named in a start error), links.
  def start_link(opts, gen_opts \\ []), do: GenServer.start_link(__MODULE__, opts, gen_opts)

  @doc false
  def child_spec(opts), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}}

  @impl GenServer
  def init(opts) do
    # Trapping exits: terminate/2 runs when the supervisor stops this process (shutdown), so a
    # stopping node leaves the cluster before the distribution goes down.
    Process.flag(:trap_exit, true)
    s = struct!(__MODULE__, Keyword.take(opts, [:topology, :prefix, :links]))

    with :ok <- EcsPeers.Update.check_nif(),
         {:ok, {config, settings}} <- EcsPeers.configure(Keyword.fetch!(opts, :config)),
         {:ok, status_table} <- EcsPeers.Status.register(s.topology),
         s = %{s | config: config, settings: settings, status_table: status_table},
         {:ok, poller} <- start_poller(s) do
      schedule_watchdog(settings)
      sharing = EcsPeers.Sharing.start(s.topology, s.prefix, settings, poller.ref)
      s = put_in(s.cluster.started, now())
      {:ok, publish(%{s | poller: poller, sharing: sharing})}
    else
      {:error, message} ->
        Logger.error("[#{s.prefix}] #{Keyword.fetch!(opts, :who)} cannot start: #{message}")
        {:stop, {:invalid_config, message}}
    end
  end

  @impl GenServer
  def handle_info({:ecs_peers, tag, {:update, update}}, %__MODULE__{poller: %{tag: tag}} = s) do
    s = put_in(s.poller.heard_at, now())
    s = report(s, update)
    {s, update} = latest(s, tag, update)
    {:noreply, s |> apply_update(update) |> publish()}
  end

  def handle_info(:watchdog, %__MODULE__{} = s) do
    silent = now() - s.poller.heard_at

    s =
      if Rules.silent?(silent, s.settings) do
        warn(s, "no poll result for #{silent} ms; restarting the poller")
        EcsPeers.native(fn -> EcsPeers.Native.stop(s.poller.ref) end)

        case start_poller(s) do
          {:ok, poller} ->
            %{s | poller: poller, sharing: EcsPeers.Sharing.poller_started(s.sharing, poller.ref)}

          {:error, message} ->
            warn(s, "cannot restart the poller: #{message}")
            s
        end
      else
        s
      end

    schedule_watchdog(s.settings)
    {:noreply, s}
  end

  # A diagnosis task's answer (EcsPeers.Membership.Diagnosis), found by its tag: kept as the
  # peer's last diagnosis. A peer connected (or gone) meanwhile has no gap with that tag, and
  # the answer is dropped.
  def handle_info({:ecs_peers_diagnosed, tag, result}, %__MODULE__{} = s) do
    case Enum.find(s.cluster.gaps, fn {_node, gap} -> gap.checking == tag end) do
      nil ->
        {:noreply, s}

      {node, gap} ->
        diagnosis =
          case result do
            {:ok, d} -> d
            {:error, _} -> gap.diagnosis
          end

        s = put_in(s.cluster.gaps[node], %{gap | checking: nil, diagnosis: diagnosis})
        {:noreply, publish(s)}
    end
  end

  # The parent going away (trap_exit) stops this process (then terminate/2).
  def handle_info({:EXIT, _from, reason}, s), do: {:stop, reason, s}

  # Sharing's messages (group changes, results from other members); updates of a replaced
  # poller, and anything else, are ignored.
  def handle_info(other, s) do
    case EcsPeers.Sharing.handle_info(other, s.sharing, s.poller.ref) do
      {:handled, sharing} -> {:noreply, publish(%{s | sharing: sharing})}
      :unhandled -> {:noreply, s}
    end
  end

  @doc false
  # The last update's `sources` (each with `poller`/`received_from`: who polls it, whose result
  # was applied), its `peers` (node-name binaries, sorted), `poll` (its number), and `sharing`
  # (`EcsPeers.Sharing.status/1`, plus `core_dropped`: received results the core dropped that
  # named no source here or did not decode), and the cluster as this node sees it: `expected`
  # (the peers it should be connected to), `connected` (those it is), `unreachable` (those it
  # has not been connected to for more than two polls, with their diagnosis): `%{topology:,
  # node:, poll:, sources:, peers:, sharing:, expected:, connected:, unreachable:}`.
  #
  # Read from what the process published (EcsPeers.Status.publish/2) after its last change,
  # and built in the caller: the process itself may be blocked for seconds in a connect (to an
  # address that drops packets: OTP's net_setuptime), exactly when its status is wanted. Exits
  # like a call when the process is not alive.
  def status(pid, timeout \\ 5_000) do
    with true <- Process.alive?(pid),
         {:ok, published} <- EcsPeers.Status.published(pid) do
      render(published)
    else
      _ -> GenServer.call(pid, :status, timeout)
    end
  end

  @impl GenServer
  def handle_call(:status, _from, s), do: {:reply, render(published(s)), s}

  # What status/1 reads: the raw state it is rendered from (no per-peer work here: this is
  # published after every update).
  defp published(s) do
    %{
      topology: s.topology,
      poll: s.last.poll,
      sources: s.last.sources,
      members: s.held.members,
      sharing: Map.put(EcsPeers.Sharing.status(s.sharing), :core_dropped, s.last.shared_dropped),
      cluster: Map.take(s.cluster, [:expected, :connected, :gaps])
    }
  end

  defp publish(s) do
    EcsPeers.Status.publish(s.status_table, published(s))
    s
  end

  defp render(p) do
    %{
      topology: p.topology,
      node: Atom.to_string(node()),
      poll: p.poll,
      sources: p.sources,
      peers: names(p.members),
      sharing: p.sharing
    }
    |> Map.merge(connections(p.cluster, p.poll))
  end

  # Stopped while the VM stops (init:stop, which ECS's SIGTERM starts): this node leaves
  # global's cluster before the distribution goes down link by link. Nothing else is called (the
  # links' processes may be gone already).
  @impl GenServer
  def terminate(reason, %__MODULE__{poller: %{ref: poller}} = s) do
    EcsPeers.Sharing.leave(s.sharing, nil)
    EcsPeers.native(fn -> EcsPeers.Native.stop(poller) end)

    if Rules.leave_on_terminate?(reason, vm_stopping?(), s.cluster.left, s.cluster.connected) and
         Node.alive?() do
      Logger.info("[#{s.prefix}] stopping; leaving the cluster")
      if global_disconnect?(), do: apply(:global, :disconnect, [])
    end

    :ok
  end

  def terminate(_reason, _s), do: :ok

  defp vm_stopping?, do: match?({:stopping, _}, :init.get_status())

  # :global.disconnect/0 is OTP 25.1+ (kernel 8.5); before OTP 25, prevent_overlapping_partitions
  # is off by default and the links' disconnect is all there is.
  defp global_disconnect?, do: function_exported?(:global, :disconnect, 0)

  defp now, do: System.monotonic_time(:millisecond)

  defp start_poller(s) do
    tag = :erlang.unique_integer([:positive])

    case EcsPeers.native(fn -> EcsPeers.Native.start(s.config, self(), tag) end) do
      {:ok, ref} -> {:ok, %{ref: ref, tag: tag, heard_at: now()}}
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

  defp apply_update(s, %EcsPeers.Update{} = update) do
    s = if update.membership == s.held.membership, do: s, else: read_members(s, update)
    ids = Enum.map(update.sources, & &1.id)
    waited = now() - s.cluster.started

    case Rules.view(s.cluster.whole, EcsPeers.TLS.in_use?(), s.cluster.answered, ids, waited) do
      :whole ->
        take_part(put_in(s.cluster.whole, true), update)

      {:partial, missing} ->
        warn(
          s,
          "taking part in the cluster with part of it: #{Enum.join(missing, ", ")} " <>
            "has not answered in #{div(waited, 1000)} s. Until it does, this node accepts and " <>
            "connects only the peers the other sources list, and OTP's global may cut links " <>
            "to the rest. Fix: see that source's error above"
        )

        take_part(put_in(s.cluster.whole, true), update)

      {:waiting, missing} when s.cluster.whole == false ->
        Logger.info(
          "[#{s.prefix}] TLS distribution: connecting and accepting no node until every " <>
            "source has answered once (waiting for #{Enum.join(missing, ", ")}; at most " <>
            "#{div(Rules.partial_view_wait_ms(), 1000)} s): a node that knows only part of " <>
            "the cluster would accept only part of it"
        )

        put_in(s.cluster.whole, :said)

      {:waiting, _missing} ->
        s
    end
  end

  defp take_part(s, %EcsPeers.Update{} = update) do
    s =
      case Rules.left_change(s.cluster.left, update.left) do
        :leave -> leave(s)
        :rejoin -> %{rejoin(s) | sharing: EcsPeers.Sharing.join(s.sharing, s.poller.ref)}
        :stay -> s
      end

    {keep, join} = Rules.targets(s.held.members, s.cluster.draining, s.cluster.left)

    # Peers due for a diagnosis by this update's number are checked before the links connect
    # (a connect to an address that drops packets blocks for seconds), and those found
    # unconnected by the links after it.
    s
    |> diagnose_due()
    |> put_dial(update)
    |> reconcile(keep, join)
    |> explain(join)
  end

  # The cluster explains itself (Rules: gaps, due, alone): after the links answered, which
  # expected peers are not connected; those due are diagnosed; the ones connected again after
  # a diagnosis, and this node being alone, are said; the telemetry carries the gap.
  defp explain(s, expected) do
    poll = s.last.poll

    {gaps, back} = Rules.gaps(s.cluster.gaps, expected, s.cluster.connected, now_utc(), poll)

    for {node, gap} <- back do
      Logger.info(
        "[#{s.prefix}] connected to #{inspect(node)} again " <>
          "(unreachable since #{iso8601(gap.since)}: #{gap.diagnosis.code})"
      )
    end

    connected = MapSet.size(MapSet.intersection(expected, s.cluster.connected))
    {alone, said} = Rules.alone(s.cluster.alone, MapSet.size(expected), connected, poll)

    case said do
      :alone ->
        Logger.error(
          "[#{s.prefix}] this node is alone: connected to none of the #{MapSet.size(expected)} " <>
            "peers discovery lists, for #{poll - elem(alone, 0) + 1} polls; it is not part of a " <>
            "cluster. Each peer's diagnosis is logged (\"cannot connect to\"), or run " <>
            "`ecs-peers doctor` from this task"
        )

      :not_alone ->
        Logger.info(
          "[#{s.prefix}] no longer alone: connected to #{connected} of the " <>
            "#{MapSet.size(expected)} peers discovery lists"
        )

      :none ->
        :ok
    end

    s = %{s | cluster: %{s.cluster | expected: expected, gaps: gaps, alone: alone}}
    s = diagnose_due(s)
    EcsPeers.Telemetry.connections(s.topology, counted(s.cluster, poll))
    s
  end

  # Starts a diagnosis task for each peer due (Rules.due/2) at the last update's number.
  defp diagnose_due(s) do
    Enum.reduce(Rules.due(s.cluster.gaps, s.last.poll), s, fn node, s ->
      gap = s.cluster.gaps[node]
      tag = :erlang.unique_integer([:positive])

      job = %{
        owner: self(),
        tag: tag,
        prefix: s.prefix,
        topology: s.topology,
        poller: s.poller.ref,
        node: node,
        previous: gap.diagnosis,
        since: iso8601(gap.since),
        polls: Rules.polls(gap, s.last.poll),
        epmd_less: EcsPeers.Epmd.in_use?()
      }

      case EcsPeers.Membership.Diagnosis.start(job) do
        {:ok, _pid} ->
          put_in(s.cluster.gaps[node], %{gap | checking: tag, checked_at: s.last.poll})

        {:error, reason} ->
          Logger.debug(fn ->
            "[#{s.prefix}] cannot diagnose #{inspect(node)}: #{inspect(reason)}"
          end)

          s
      end
    end)
  end

  # expected, connected (node-name binaries, sorted) and unreachable, for status/1.
  defp connections(%{expected: expected, connected: connected, gaps: gaps}, poll) do
    %{
      expected: names(expected),
      connected: names(MapSet.intersection(expected, connected)),
      unreachable: unreachable(gaps, poll)
    }
  end

  # The same for the telemetry of every update: counts, and the unreachable peers (few), so no
  # list of every peer is built per update.
  defp counted(%{expected: expected, connected: connected, gaps: gaps}, poll) do
    %{
      expected: MapSet.size(expected),
      connected: MapSet.size(MapSet.intersection(expected, connected)),
      unreachable: unreachable(gaps, poll)
    }
  end

  defp unreachable(gaps, poll) do
    for {node, gap} <- Enum.sort(gaps),
        Rules.unreachable?(gap, poll),
        do: unreachable_entry(node, gap, poll)
  end

  # One unreachable peer: its node, its diagnosis (code, reason and fix; nil until the first
  # one arrives), since when (RFC 3339, UTC) and for how many polls.
  defp unreachable_entry(node, gap, poll) do
    d = gap.diagnosis || %{}

    %{
      node: Atom.to_string(node),
      code: d[:code],
      reason: d[:problem],
      fix: d[:fix],
      since: iso8601(gap.since),
      polls: Rules.polls(gap, poll)
    }
  end

  defp now_utc, do: System.system_time(:millisecond)

  defp names(nodes), do: nodes |> Enum.map(&Atom.to_string/1) |> Enum.sort()

  defp iso8601(ms), do: ms |> DateTime.from_unix!(:millisecond) |> DateTime.to_iso8601()

  defp rejoin(s), do: put_in(s.cluster.left, false)

  # Where each peer is dialled goes to the EPMD-less distribution bridge before any connection
  # is made, so a node started with `-epmd_module Elixir.EcsPeers.Epmd` reaches each peer at the
  # address and port ECS reports (the mapped host port in bridge mode). Read and handed over
  # only when it changed (the NIF reuses the handle while the entries are the same; resource
  # terms compare equal when they are the same resource); `:ignored` when the VM does not use
  # EcsPeers.Epmd.
  defp put_dial(%{held: %{dial: dial}} = s, %EcsPeers.Update{dial: dial}), do: s

  defp put_dial(s, %EcsPeers.Update{dial: dial}) do
    with {:ok, entries} <- EcsPeers.native(fn -> EcsPeers.Native.dial(dial) end),
         result when result in [:ok, :ignored] <- EcsPeers.Epmd.put_peers(entries) do
      put_in(s.held.dial, dial)
    else
      {:error, message} ->
        warn(s, "cannot hand the peers' addresses to EcsPeers.Epmd: #{message}")
        s
    end
  catch
    :exit, reason ->
      warn(s, "cannot hand the peers' addresses to EcsPeers.Epmd: #{inspect(reason)}")
      s
  end

  # This node leaves the cluster: global first isolates it, then disconnects every node it
  # knows, so no peer takes the going for a partition; then whatever global did not know
  # (hidden nodes) is disconnected through the links.
  defp leave(s) do
    s = %{s | sharing: EcsPeers.Sharing.leave(s.sharing, s.poller.ref)}

    gone =
      if Node.alive?() and global_disconnect?(), do: apply(:global, :disconnect, []), else: []

    if gone != [] do
      Logger.info("[#{s.prefix}] left the cluster: disconnected from #{inspect(Enum.sort(gone))}")
    end

    put_in(s.cluster.left, true)
  end

  # Atoms are made (by the NIF) only for a membership that changed. The names cannot be read
  # only if the NIF breaks: then the membership held is kept (nobody is disconnected for it).
  defp read_members(s, update) do
    case EcsPeers.native(fn -> EcsPeers.Native.nodes(update.nodes) end) do
      {:ok, nodes} ->
        %{s | held: %{s.held | membership: update.membership, members: MapSet.new(nodes)}}

      {:error, message} ->
        warn(s, "cannot read the peers' node names: #{message}")
        s
    end
  end

  # Carries out Rules.reconcile/3 through the links (libcluster's contract: disconnect, then
  # connect the full list to join).
  defp reconcile(%__MODULE__{links: {mod, ctx}} = s, keep, join) do
    {disconnect, connected} = Rules.reconcile(s.cluster.connected, keep, join)

    connected =
      case safely(s, fn -> mod.disconnect(ctx, disconnect) end) do
        {:error, failed} -> Rules.disconnect_failed(connected, failed)
        _ -> connected
      end

    connected =
      case connect(s, mod, ctx, join) do
        {:error, failed} -> Rules.connect_failed(connected, failed)
        _ -> connected
      end

    put_in(s.cluster.connected, connected)
  end

  # A connect to a peer that does not answer blocks its caller for OTP's net_setuptime (7 s by
  # default: a dropped port, a clear-text peer of a TLS node). One such peer must not hold up the
  # others, nor k of them add up to k × 7 s before a new task is connected: the peers this
  # process does not hold as connected are each connected in a process of their own, at once;
  # those it holds (the links skip what is still connected) in one more. The links see the
  # same nodes as with one call, a node at a time (libcluster's connect_nodes/4 connects one
  # node at a time too, and logs each).
  defp connect(s, mod, ctx, join) do
    {held, new} = Enum.split_with(join, &MapSet.member?(s.cluster.connected, &1))
    batches = if(held == [], do: [], else: [held]) ++ Enum.map(new, &[&1])

    case batches do
      [] ->
        :ok

      [nodes] ->
        safely(s, fn -> mod.connect(ctx, nodes) end)

      _ ->
        batches
        |> Task.async_stream(fn nodes -> safely(s, fn -> mod.connect(ctx, nodes) end) end,
          max_concurrency: length(batches),
          timeout: :infinity,
          zip_input_on_exit: true
        )
        |> Enum.flat_map(fn
          {:ok, {:error, failed}} ->
            failed

          {:ok, _} ->
            []

          {:exit, {nodes, reason}} ->
            Logger.error("[#{s.prefix}] connect failed: #{inspect(reason)}")
            Enum.map(nodes, &{&1, reason})
        end)
        |> then(&if(&1 == [], do: :ok, else: {:error, &1}))
    end
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
  # silent poller), then the update's telemetry; the results this node polled for the sharing
  # group are sent on (every update's: a source polled in a skipped round may not be in the
  # newest); the draining peers are noted, and the update's status is kept for status/1.
  defp report(s, %EcsPeers.Update{} = update) do
    for event <- update.events do
      case event.event do
        e when e in ["source_failing", "conflict_found", "tasks_skipped", "poller_silent"] ->
          warn(s, event.message)

        _ ->
          Logger.info("[#{s.prefix}] #{event.message}")
      end
    end

    EcsPeers.Telemetry.poll(s.topology, update)

    Logger.debug(fn ->
      "[#{s.prefix}] poll #{update.poll}: #{update.peer_count} peers, " <>
        "#{Enum.count(update.sources, & &1.ok)}/#{length(update.sources)} sources ok"
    end)

    EcsPeers.Sharing.forward(s.sharing, update)

    %{
      s
      | last: %{
          poll: update.poll,
          sources: update.sources,
          shared_dropped: update.shared_dropped
        },
        cluster: %{
          s.cluster
          | draining: Rules.draining(s.cluster.draining, update),
            answered:
              for(
                src <- update.sources,
                Rules.answered?(src.state),
                into: s.cluster.answered,
                do: src.id
              )
        }
    }
  end

  defp warn(s, message), do: Logger.warning("[#{s.prefix}] #{message}")

  defp schedule_watchdog(settings),
    do: Process.send_after(self(), :watchdog, Rules.stall_limit(settings))
end
