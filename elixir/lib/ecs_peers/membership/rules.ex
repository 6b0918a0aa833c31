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
  A peer this node should be connected to and is not: since when (`since`, system time in ms)
  and since which update (`first_poll`, the core's poll number), the diagnosis in flight
  (`checking`: its tag, or `nil`) and the poll it was started at (`checked_at`), and the last
  diagnosis (`%{code:, subject:, problem:, fix:}`, the core's doctor's, or `nil`).

  Polls are counted by the updates' poll numbers, not by the updates this process acted on:
  a connect to an address that drops packets blocks the links for seconds (OTP's
  `net_setuptime`, 7 s), and the updates meanwhile are skipped, not waited for.
  """
  @type gap :: %{
          since: integer(),
          first_poll: pos_integer(),
          checking: term() | nil,
          checked_at: pos_integer() | nil,
          diagnosis: map() | nil
        }

  @doc """
  How long a TLS node waits, at most, for every source's first answer before it takes part in
  the cluster with the peers it knows (ms).
  """
  @partial_view_wait_ms 30_000
  def partial_view_wait_ms, do: @partial_view_wait_ms

  @doc """
  Whether this node takes part in the cluster yet (connects, and is accepted by its identity
  rule's listed hosts). `held`: `true` once it has (for good), `false`/`:said` before (`:said`:
  the wait was logged); `tls?`: distribution runs over TLS; `answered`: the ids of the sources
  that have answered at least once (ok, skipping or absent); `ids`: the sources of the last
  update; `waited_ms`: since the poller started.

  A node over TCP takes part at once: it accepts any node with the cookie, so OTP's `global`
  completes the mesh whatever this node knows. A TLS node accepts only the nodes discovery lists
  (`EcsPeers.TLS`); with part of its sources unanswered (a first poll throttled) it would accept
  part of the cluster while its peers are connected to all of it, and OTP's `global`
  (`prevent_overlapping_partitions`) cuts such a partial mesh, links between healthy nodes
  included. So it waits for every source's first answer, at most `partial_view_wait_ms/0` (a
  region that does not answer at boot does not keep it out of its cluster).

  `:whole`, `{:waiting, missing}` (source ids), or `{:partial, missing}` (the wait is over).
  """
  @spec view(boolean() | :said, boolean(), MapSet.t(), [String.t()], non_neg_integer()) ::
          :whole | {:waiting | :partial, [String.t()]}
  def view(true, _tls?, _answered, _ids, _waited_ms), do: :whole
  def view(_held, false, _answered, _ids, _waited_ms), do: :whole

  def view(_held, true, answered, ids, waited_ms) do
    case Enum.reject(ids, &MapSet.member?(answered, &1)) do
      [] -> :whole
      missing when waited_ms >= @partial_view_wait_ms -> {:partial, missing}
      missing -> {:waiting, missing}
    end
  end

  @doc "Whether a source's state (`EcsPeers.Update`'s) is an answer: ok, skipping or absent."
  @spec answered?(String.t()) :: boolean()
  def answered?(state), do: state in ["ok", "skipping", "absent"]

  @doc """
  The gaps after the update `poll`: every peer of `expected` (the peers this node should be
  connected to: the members it joins) that is not in `connected` has a gap, the one it had or
  a new one since `now` (system time, ms) and `poll`. Also returns the peers connected again
  after they were diagnosed (`[{node, gap}]`, sorted), to say so. A peer no longer expected
  has no gap (nor is it "connected again").
  """
  @spec gaps(%{node() => gap()}, nodes(), nodes(), integer(), pos_integer()) ::
          {%{node() => gap()}, [{node(), gap()}]}
  def gaps(held, expected, connected, now, poll) do
    gaps =
      expected
      |> MapSet.difference(connected)
      |> Map.new(fn node ->
        case held do
          %{^node => gap} ->
            {node, gap}

          _ ->
            {node,
             %{since: now, first_poll: poll, checking: nil, checked_at: nil, diagnosis: nil}}
        end
      end)

    back =
      for {node, gap} <- Enum.sort(held),
          gap.diagnosis != nil,
          MapSet.member?(connected, node),
          do: {node, gap}

    {gaps, back}
  end

  @doc "How many polls a peer has been unconnected for, at the update `poll` (from 1)."
  @spec polls(gap(), pos_integer()) :: pos_integer()
  def polls(%{first_poll: first}, poll), do: max(poll - first + 1, 1)

  @doc """
  Whether a peer counts as unreachable at the update `poll`: unconnected for more than two
  polls (a new task's node may take a poll or two to come up).
  """
  @spec unreachable?(gap(), pos_integer()) :: boolean()
  def unreachable?(gap, poll), do: polls(gap, poll) > 2

  @doc """
  The peers due for a diagnosis at the update `poll`, sorted: unreachable (`unreachable?/2`),
  none in flight for them, and never diagnosed, or last diagnosed at least three polls ago (so
  a diagnosis that changes, e.g. a node that came back with the wrong cookie after its port was
  opened, is seen within three polls).
  """
  @spec due(%{node() => gap()}, pos_integer()) :: [node()]
  def due(gaps, poll) do
    for {node, gap} <- Enum.sort(gaps),
        unreachable?(gap, poll),
        gap.checking == nil,
        gap.checked_at == nil or poll - gap.checked_at >= 3,
        do: node
  end

  @doc """
  Whether a peer's new diagnosis is said (logged, emitted): `:changed` when it had none, or
  one with another code or problem; `:same` otherwise. A diagnosis is said once, and again
  only when it changes.
  """
  @spec diagnosis_change(map() | nil, map()) :: :changed | :same
  def diagnosis_change(%{code: code, problem: problem}, %{code: code, problem: problem}),
    do: :same

  def diagnosis_change(_previous, _new), do: :changed

  @doc """
  Whether this node is alone while discovery lists others, after the update `poll` in which it
  expected `expected` peers and is connected to `connected` of them. `held` is `nil` (it was
  not alone) or `{first_poll, said?}`. `:alone` once, when it has been alone for more than two
  polls; `:not_alone` once, when that ends after it was said; `:none` otherwise.
  """
  @spec alone(
          {pos_integer(), boolean()} | nil,
          non_neg_integer(),
          non_neg_integer(),
          pos_integer()
        ) ::
          {{pos_integer(), boolean()} | nil, :alone | :not_alone | :none}
  def alone(held, expected, connected, poll) when expected > 0 and connected == 0 do
    case held do
      {first, false} when poll - first >= 2 -> {{first, true}, :alone}
      {first, said} -> {{first, said}, :none}
      nil -> {{poll, false}, :none}
    end
  end

  def alone({_first, true}, _expected, _connected, _poll), do: {nil, :not_alone}
  def alone(_held, _expected, _connected, _poll), do: {nil, :none}

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
