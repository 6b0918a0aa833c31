defmodule EcsPeers.Membership.Rules do
  @moduledoc false
  # The membership decisions, as plain functions of plain data (no process, no NIF, no AWS):
  # which nodes to keep, join and disconnect given an update and what is connected, when this
  # node leaves or rejoins, which peers are draining, and when the poller counts as silent;
  # which peers this node cannot connect to (gaps), when one is due for a diagnosis, when a
  # diagnosis is said again, and when this node is alone while discovery lists others.
  # `EcsPeers.Membership` runs them and carries out what they return.
  #
  # Why these rules: OTP's global (prevent_overlapping_partitions, on by default since OTP 25)
  # treats a link lost between two nodes that are both up as a partition in the making: when A
  # and B lose their link, A tells every node it still sees that it lost B, and each of them,
  # still connected to B, disconnects B, although B is healthy. So peers never cut a draining
  # node (it is gone by the time ECS reports its task STOPPED), and a leaving node leaves with
  # `:global.disconnect/0`, which isolates it in global first, so the others read its going as
  # a node leaving, not as a partition.

  @typedoc "Node atoms."
  @type nodes :: MapSet.t(node())

  @typedoc "Node-name binaries of the peers that are draining (their task is stopping)."
  @type draining :: MapSet.t(String.t())

  @doc """
  What to do about this node's own task: `:leave` when the core says it has left (`left`, the
  source's id) and this node had not; `:rejoin` when it had left and a source lists it again
  (`left` back to `nil`); `:stay` otherwise (nothing changes).
  """
  @spec left_change(boolean(), String.t() | nil) :: :leave | :rejoin | :stay
  def left_change(false, left) when left != nil, do: :leave
  def left_change(true, nil), do: :rejoin
  def left_change(_held, _left), do: :stay

  @doc """
  The nodes to keep connected and the nodes to join, from the membership (`members`: the
  core's, this node left out), the draining peers and whether this node has left.

  A node that has left keeps and joins nobody. A draining peer is kept connected if it is, but
  never joined anew: it is leaving the cluster itself.
  """
  @spec targets(nodes(), draining(), boolean()) :: {keep :: nodes(), join :: nodes()}
  def targets(_members, _draining, true), do: {MapSet.new(), MapSet.new()}

  def targets(members, draining, false) do
    if MapSet.size(draining) == 0,
      do: {members, members},
      else: {members, MapSet.reject(members, &(Atom.to_string(&1) in draining))}
  end

  @doc """
  libcluster's contract applied to what is connected: disconnect the connected nodes no longer
  kept (a sorted list), and the connected set assumed once `join` is connected.
  """
  @spec reconcile(nodes(), nodes(), nodes()) :: {disconnect :: [node()], connected :: nodes()}
  def reconcile(connected, keep, join) do
    disconnect = connected |> MapSet.difference(keep) |> Enum.sort()
    {disconnect, connected |> MapSet.intersection(keep) |> MapSet.union(join)}
  end

  @doc """
  The connected set after the links answered: a node whose disconnect failed is still
  connected (tried again next update); a node whose connect failed is not (tried again next
  update). `failed` is libcluster's `[{node, reason}]`.
  """
  @spec disconnect_failed(nodes(), [{node(), term()}]) :: nodes()
  def disconnect_failed(connected, failed),
    do: MapSet.union(connected, MapSet.new(failed, fn {n, _} -> n end))

  @doc false
  @spec connect_failed(nodes(), [{node(), term()}]) :: nodes()
  def connect_failed(connected, failed),
    do: MapSet.difference(connected, MapSet.new(failed, fn {n, _} -> n end))

  @doc """
  The draining peers after an update: those the core reports draining are added; those it no
  longer lists (`removed`) or lists anew (`added`) are dropped. `update` has the core's
  `added`/`removed`/`draining` peer lists (`%{node: binary}` each).
  """
  @spec draining(draining(), %{
          added: [%{node: String.t()}],
          removed: [%{node: String.t()}],
          draining: [%{node: String.t()}]
        }) :: draining()
  def draining(held, %{draining: [], added: added, removed: removed}) do
    if MapSet.size(held) == 0, do: held, else: drop(held, added, removed)
  end

  def draining(held, %{draining: now, added: added, removed: removed}),
    do: held |> drop(added, removed) |> MapSet.union(names(now))

  defp drop(held, added, removed),
    do: held |> MapSet.difference(names(removed)) |> MapSet.difference(names(added))

  defp names(peers), do: MapSet.new(peers, & &1.node)

  @doc """
  Whether a poller that sent nothing for `silent_ms` counts as silent (then it is restarted):
  longer than three polling intervals plus a poll's timeout, and at least 10 s. `settings` has
  the validated `polling_interval` and `poll_timeout` in milliseconds.
  """
  @spec silent?(non_neg_integer(), %{polling_interval: pos_integer(), poll_timeout: pos_integer()}) ::
          boolean()
  def silent?(silent_ms, settings), do: silent_ms > stall_limit(settings)

  @doc "How often the watchdog looks, in milliseconds (the silence limit of `silent?/2`)."
  @spec stall_limit(%{polling_interval: pos_integer(), poll_timeout: pos_integer()}) ::
          pos_integer()
  def stall_limit(%{polling_interval: i, poll_timeout: t}), do: max(3 * i + t, 10_000)

  @typedoc """
  A peer discovery lists that this node is not connected to: `since` (system time, ms) and
  `polls` (consecutive updates without a connection, from 1), the diagnosis in flight
  (`checking`: its tag, or `nil`) and the poll count it was started at (`checked_at`), and
  the last diagnosis (`%{code:, subject:, problem:, fix:}` from the core's doctor, or `nil`).
  """
  @type gap :: %{
          since: integer(),
          polls: pos_integer(),
          checking: term() | nil,
          checked_at: pos_integer() | nil,
          diagnosis: map() | nil
        }

  @doc """
  The gaps after an update: every peer of `expected` (the peers this node should be connected
  to: the members it joins) that is not in `connected` has a gap, one poll longer than it had,
  or a new one since `now` (system time, ms). Also returns the peers connected again after
  they were diagnosed (`[{node, gap}]`, sorted), to say so. A peer no longer expected has no
  gap (nor is it "connected again").
  """
  @spec gaps(%{node() => gap()}, nodes(), nodes(), integer()) ::
          {%{node() => gap()}, [{node(), gap()}]}
  def gaps(held, expected, connected, now) do
    gaps =
      expected
      |> MapSet.difference(connected)
      |> Map.new(fn node ->
        case held do
          %{^node => gap} -> {node, %{gap | polls: gap.polls + 1}}
          _ -> {node, %{since: now, polls: 1, checking: nil, checked_at: nil, diagnosis: nil}}
        end
      end)

    back =
      for {node, gap} <- Enum.sort(held),
          gap.diagnosis != nil,
          MapSet.member?(connected, node),
          do: {node, gap}

    {gaps, back}
  end

  @doc """
  Whether a peer counts as unreachable: unconnected for more than two polls (a new task's node
  may take a poll or two to come up).
  """
  @spec unreachable?(gap()) :: boolean()
  def unreachable?(%{polls: polls}), do: polls > 2

  @doc """
  The peers due for a diagnosis, sorted: unreachable (`unreachable?/1`), none in flight for
  them, and never diagnosed, or last diagnosed at least three polls ago (so a diagnosis that
  changes, e.g. a node that came up with the wrong cookie after its port was opened, is seen).
  """
  @spec due(%{node() => gap()}) :: [node()]
  def due(gaps) do
    for {node, gap} <- Enum.sort(gaps),
        unreachable?(gap),
        gap.checking == nil,
        gap.checked_at == nil or gap.polls - gap.checked_at >= 3,
        do: node
  end

  @doc """
  A diagnosis arrived for a peer: the gap with it, and whether to say so (`:changed`: the peer
  had none, or another code or problem; `:same` otherwise). A diagnosis is logged once, and
  again only when it changes.
  """
  @spec diagnosed(gap(), map()) :: {:changed | :same, gap()}
  def diagnosed(gap, %{code: code, problem: problem} = diagnosis) do
    said =
      case gap.diagnosis do
        %{code: ^code, problem: ^problem} -> :same
        _ -> :changed
      end

    {said, %{gap | diagnosis: diagnosis, checking: nil}}
  end

  @doc """
  Whether this node is alone while discovery lists others: `alone` is how many updates in a
  row it has been (0: it is not), after an update in which it expected `expected` peers and
  is connected to `connected` of them. `:alone` once, when it has been alone for more than two
  polls; `:not_alone` once, when it connects after that; `:none` otherwise.
  """
  @spec alone(non_neg_integer(), non_neg_integer(), non_neg_integer()) ::
          {non_neg_integer(), :alone | :not_alone | :none}
  def alone(held, expected, connected) do
    cond do
      expected > 0 and connected == 0 and held + 1 == 3 -> {held + 1, :alone}
      expected > 0 and connected == 0 -> {held + 1, :none}
      held >= 3 -> {0, :not_alone}
      true -> {0, :none}
    end
  end

  @doc """
  Whether a stopping membership process leaves the cluster: only when it is shut down while
  the VM stops (init:stop, which ECS's SIGTERM starts), it has not left already, and it is
  connected to someone. A crash, or a restart by the supervisor while the VM runs on, does not
  leave (the process carries on).
  """
  @spec leave_on_terminate?(term(), boolean(), boolean(), nodes()) :: boolean()
  def leave_on_terminate?(reason, vm_stopping?, left?, connected) do
    shutdown = reason == :shutdown or match?({:shutdown, _}, reason)
    shutdown and vm_stopping? and not left? and MapSet.size(connected) > 0
  end
end
