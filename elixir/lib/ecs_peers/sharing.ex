defmodule EcsPeers.Sharing do
  @moduledoc false
  # Fleet-shared polling, the Elixir half. It decides nothing about who polls what:
  # it tells the core who is in the sharing group (`EcsPeers.Native.share/2`), carries the
  # results the core hands out (`update.shared`) to the other members, and hands what arrives to
  # the core (`EcsPeers.Native.receive_shared/3`). The core elects the poller of each source,
  # applies or drops a result and falls back to polling itself (one rule, in the core).
  #
  # Its state lives in the membership process (`EcsPeers.Membership`, which serves both
  # `EcsPeers.Strategy` and `EcsPeers.Cluster`): that process is the group member, so results
  # arrive in its mailbox next to the poller's updates.
  #
  # - The group: `{:ecs_peers, topology, sharing_key, :erlang.phash2(Node.get_cookie())}`, where
  #   `sharing_key` comes from the core (`validate/2`; equal only for nodes whose sources,
  #   naming, draining, distribution port and polling interval are the same). Joined only when
  #   `share_polling` is true (the default) and the node is alive; otherwise nothing here joins
  #   or calls the core.
  # - The scope: a `:pg` scope registered as `EcsPeers.Sharing`, on every node (remote scopes
  #   talk to it by that name), supervised by `EcsPeers.Application`. Every membership process
  #   monitors it; should it restart, each joins again (the core polls alone in between:
  #   `share(poller, [])`).
  # - Members: the nodes of the group's pids, this node included, sorted and deduplicated; the
  #   core is told on every change, after the poller starts or is restarted, `[]` when this node
  #   leaves the group (on `local_left`, before `:global.disconnect/0`, and on terminate).
  # - Sending: each binary of `update.shared` goes, unchanged, to every other member pid as
  #   `{:ecs_peers_shared, group, node(), binary}`, with `:noconnect` (sharing never opens a
  #   connection: who is connected is the membership rule's decision alone).
  # - Receiving: a message for this node's own group goes to the core with the sender's node
  #   name as a binary (one from a node not yet known as a member is held until the group's
  #   notification arrives: see take/4); anything else (another group, this node out of its
  #   group, a malformed message) is dropped, counted (`dropped` in the status) and logged at
  #   debug. Nothing received becomes an atom here.

  require Logger

  @scope __MODULE__
  # Results held from nodes not (yet) known as members.
  @held 32
  # How soon to look again for a restarting scope.
  @rewatch_ms 100

  @typedoc """
  `enabled`: sharing is configured and the node is alive; `key`: the core's `sharing_key`
  (16 hex digits) or nil; `group`: the `:pg` group; `ref`: the `:pg.monitor/2` reference while
  joined (nil when not); `pids`/`nodes`: the members (nodes as binaries, sorted); `held`:
  results from nodes not yet known as members (`{node, result}`, oldest first); `dropped`:
  messages dropped since start; `scope_ref`: the monitor of the scope process.
  """
  @type t :: %__MODULE__{
          topology: atom(),
          prefix: String.t(),
          enabled: boolean(),
          key: String.t() | nil,
          group: tuple() | nil,
          ref: reference() | nil,
          scope_ref: reference() | nil,
          pids: [pid()],
          nodes: [String.t()],
          held: [{String.t(), binary()}],
          dropped: non_neg_integer()
        }

  defstruct [
    :topology,
    :prefix,
    :key,
    :group,
    :ref,
    :scope_ref,
    enabled: false,
    held: [],
    pids: [],
    nodes: [],
    dropped: 0
  ]

  @doc "The `:pg` scope's child spec (`EcsPeers.Application` supervises it)."
  @spec scope_spec() :: Supervisor.child_spec()
  def scope_spec, do: %{id: @scope, start: {:pg, :start_link, [@scope]}}

  @doc """
  The sharing state of a topology's membership process, from the core's validated config
  (`settings`: what `EcsPeers.Native.config/2` returns, with `share_polling`,
  `share_polling_given` and `sharing_key`). Joins the sharing group when sharing is on and the
  node is alive; `poller` is told the members.
  """
  @spec start(atom(), String.t(), map(), term()) :: t()
  def start(topology, prefix, settings, poller) do
    wanted = settings.share_polling == true
    key = settings.sharing_key
    enabled = wanted and is_binary(key) and Node.alive?()

    if wanted and not enabled, do: not_sharing(prefix, settings)

    group = if enabled, do: {:ecs_peers, topology, key, :erlang.phash2(Node.get_cookie())}
    sh = %__MODULE__{topology: topology, prefix: prefix, enabled: enabled, key: key, group: group}

    if enabled, do: sh |> watch_scope() |> join(poller), else: sh
  end

  # Sharing is on but this node cannot share. Asked for (`share_polling: true` given), that is
  # worth a warning; on by default, a node that is not distributed (mix test, iex without
  # --name) is the usual case, not a mistake: a debug line.
  defp not_sharing(prefix, settings) do
    message =
      "[#{prefix}] share_polling is on but this node is not distributed " <>
        "(or the core gave no sharing_key): it polls every source itself"

    if settings.share_polling_given,
      do: Logger.warning(message),
      else: Logger.debug(fn -> message <> " (share_polling is on by default)" end)
  end

  @doc "Joins the sharing group again (this node is listed by its sources again)."
  @spec join(t(), term()) :: t()
  def join(%__MODULE__{enabled: true, ref: nil} = sh, poller) do
    {ref, _pids} = :pg.monitor(@scope, sh.group)
    :ok = :pg.join(@scope, sh.group, self())
    members(%{sh | ref: ref}, poller, true)
  catch
    :exit, reason ->
      Logger.warning("[#{sh.prefix}] cannot join the sharing group: #{inspect(reason)}")
      sh
  end

  def join(sh, _poller), do: sh

  @doc """
  Leaves the sharing group (this node leaves the cluster, or stops); `poller` (nil when it
  has stopped) then polls every source itself.
  """
  @spec leave(t(), term()) :: t()
  def leave(%__MODULE__{ref: ref} = sh, poller) when ref != nil do
    try do
      :pg.demonitor(@scope, ref)
      :pg.leave(@scope, sh.group, self())
    catch
      :exit, _ -> :ok
    end

    sh = %{sh | ref: nil, pids: [], held: []}
    if poller, do: tell(sh, poller, []), else: %{sh | nodes: []}
  end

  def leave(sh, _poller), do: sh

  @doc "Tells a (re)started poller the current members."
  @spec poller_started(t(), term()) :: t()
  def poller_started(%__MODULE__{ref: ref} = sh, poller) when ref != nil,
    do: tell(sh, poller, sh.nodes)

  def poller_started(sh, _poller), do: sh

  @doc """
  Handles a message meant for sharing: `{:handled, t()}`, or `:unhandled` for anything else.
  Group changes (`:pg.monitor/2` notifications), the scope's going down, and results sent by
  other members.
  """
  @spec handle_info(term(), t(), term()) :: {:handled, t()} | :unhandled
  def handle_info({ref, kind, _group, _pids}, %__MODULE__{ref: ref} = sh, poller)
      when ref != nil and kind in [:join, :leave],
      do: {:handled, members(sh, poller, false)}

  def handle_info({:DOWN, ref, :process, _, reason}, %__MODULE__{scope_ref: ref} = sh, poller) do
    Logger.warning("[#{sh.prefix}] the sharing scope stopped (#{inspect(reason)}); joining again")
    sh = if sh.ref, do: tell(%{sh | ref: nil, pids: []}, poller, []), else: sh
    {:handled, rewatch(%{sh | scope_ref: nil}, poller)}
  end

  def handle_info({__MODULE__, :rewatch}, %__MODULE__{scope_ref: nil} = sh, poller),
    do: {:handled, rewatch(sh, poller)}

  def handle_info({:ecs_peers_shared, group, from, result}, sh, poller) do
    if sh.ref != nil and group == sh.group and is_atom(from) and is_binary(result) do
      {:handled, take(sh, poller, Atom.to_string(from), result)}
    else
      Logger.debug(fn ->
        "[#{sh.prefix}] dropped a shared result for another group (or while not in the group)"
      end)

      {:handled, %{sh | dropped: sh.dropped + 1}}
    end
  end

  def handle_info(_msg, _sh, _poller), do: :unhandled

  # A result from a member the core has been told about goes to the core. One from a node this
  # process does not know as a member yet overtook the group's join notification (that comes
  # from the local scope, another sender, so nothing orders the two); handed on at once, the
  # core would drop the poller's full result as from a stranger and could not resolve the
  # "same as" results after it. So the members are read again first, and if the node is still
  # not one, the result is held until the group changes (at most @held, the oldest dropped and
  # counted).
  defp take(sh, poller, from, result) do
    sh = if from in sh.nodes, do: sh, else: members(sh, poller, false)

    if from in sh.nodes do
      case EcsPeers.native(fn -> EcsPeers.Native.receive_shared(poller, from, result) end) do
        :ok -> :ok
        other -> Logger.debug("[#{sh.prefix}] shared result not taken: #{inspect(other)}")
      end

      sh
    else
      held = sh.held ++ [{from, result}]
      over = max(length(held) - @held, 0)
      %{sh | held: Enum.drop(held, over), dropped: sh.dropped + over}
    end
  end

  # Hands the held results of nodes that are now members to the core, in arrival order.
  defp release(%{held: []} = sh, _poller), do: sh

  defp release(sh, poller) do
    {now, later} = Enum.split_with(sh.held, fn {from, _} -> from in sh.nodes end)
    sh = %{sh | held: later}
    Enum.reduce(now, sh, fn {from, result}, sh -> take(sh, poller, from, result) end)
  end

  @doc """
  Sends each binary of `update.shared` (the results this node polled for the others) to every
  other member. Nothing is sent when not in a group.
  """
  @spec forward(t(), map()) :: :ok
  def forward(%__MODULE__{ref: ref} = sh, update) when ref != nil do
    me = self()

    for result <- Map.get(update, :shared, []), pid <- sh.pids, pid != me do
      :erlang.send(pid, {:ecs_peers_shared, sh.group, node(), result}, [:noconnect])
    end

    :ok
  end

  def forward(_sh, _update), do: :ok

  @doc """
  The sharing part of `EcsPeers.status/1`: `%{enabled: boolean, key: binary | nil, members:
  [node binary], dropped: integer}` (`members` empty when not in a group).
  """
  @spec status(t()) :: map()
  def status(sh),
    do: %{enabled: sh.enabled, key: sh.key, members: sh.nodes, dropped: sh.dropped}

  # Monitors the scope, which EcsPeers.Application runs.
  defp watch_scope(sh) do
    case Process.whereis(@scope) do
      nil -> sh
      pid -> %{sh | scope_ref: Process.monitor(pid)}
    end
  end

  # After the scope stopped: its supervisor restarts it, but nothing orders that restart before
  # this process's :DOWN, so it looks again shortly until the scope is back, then joins.
  defp rewatch(sh, poller) do
    case watch_scope(sh) do
      %{scope_ref: nil} = sh ->
        Process.send_after(self(), {__MODULE__, :rewatch}, @rewatch_ms)
        sh

      sh ->
        join(sh, poller)
    end
  end

  # Reads the group's members and tells the core when the set of nodes changed (or `force`).
  defp members(sh, poller, force) do
    pids = :pg.get_members(@scope, sh.group)
    nodes = pids |> Enum.map(&Atom.to_string(node(&1))) |> Enum.uniq() |> Enum.sort()
    sh = %{sh | pids: pids}
    if force or nodes != sh.nodes, do: sh |> tell(poller, nodes) |> release(poller), else: sh
  end

  defp tell(sh, poller, nodes) do
    case EcsPeers.native(fn -> EcsPeers.Native.share(poller, nodes) end) do
      :ok ->
        :ok

      {:error, message} ->
        Logger.warning("[#{sh.prefix}] cannot tell the poller the sharing members: #{message}")
    end

    if nodes != sh.nodes do
      me = Atom.to_string(node())

      case nodes do
        [] ->
          Logger.info("[#{sh.prefix}] left the sharing group: every source is polled here")

        # On by default, every node starts so (and a one-node cluster stays so): not "sharing".
        [^me] ->
          Logger.info(
            "[#{sh.prefix}] alone in the sharing group so far: every source is polled here"
          )

        _ ->
          Logger.info("[#{sh.prefix}] sharing polling with #{Enum.join(nodes, ", ")}")
      end

      EcsPeers.Telemetry.sharing_members(sh.topology, sh.key, nodes)
    end

    %{sh | nodes: nodes}
  end
end
