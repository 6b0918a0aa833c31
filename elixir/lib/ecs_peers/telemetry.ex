defmodule EcsPeers.Telemetry do
  @moduledoc """
  The `:telemetry` events of `EcsPeers.Strategy` and `EcsPeers.Cluster` (emitted only when the
  optional `:telemetry` application is loaded). `topology` is the libcluster topology, or the
  child's `name`.

  - `[:ecs_peers, :poll, :stop]`, for every update: measurements `%{duration: native_time,
    peers: integer, added: integer, removed: integer, api_calls: integer, failing_sources:
    integer, skipping_sources: integer, absent_sources: integer, sharing_with: integer}`
    (`duration`: the poll round, in native time units; each source counted by its `state`, the
    core's one reading of its last answer: `failing_sources` those whose last poll failed,
    `skipping_sources` those that answered but skipped every task or instance they found (no
    peers while tasks run; each status's `skipped` says why, with the fix), `absent_sources`
    the regions of `regions` sources where the stack is absent (not enabled, or no such
    cluster or service), each status saying why in `absent`;
    `api_calls`: the AWS calls made in this poll round by every source, 0 in a round where
    every source was backing off or was polled by another node; `sharing_with`: the sharing
    group's size, 0 when not sharing), metadata `%{topology: atom, sources: [status]}`. With
    `share_polling` it also fires for an update published at once because a received result
    changed something (then `api_calls` is 0): it counts updates, not AWS polls;
  - `[:ecs_peers, :source, :error]`, for each failing source on each update: measurements
    `%{consecutive_failures: integer}`, metadata `%{topology: atom, source: binary (the source
    id), kind: binary, error: binary}`;
  - `[:ecs_peers, :sharing, :members]` (with `share_polling`), each time the sharing group's
    nodes change: measurements `%{count: integer}` (the nodes in the group, this node included;
    0 when it left the group), metadata `%{topology: atom, key: binary, nodes: [node binary]}`;
  - `[:ecs_peers, :cluster, :connections]`, after every update, once its peers were connected:
    measurements `%{expected: integer, connected: integer, unreachable: integer}` (how many
    peers this node should be connected to, how many of them it is, and how many it has not
    been connected to for more than two polls; `EcsPeers.status/1` lists the first two),
    metadata `%{topology: atom, unreachable: [unreachable]}`, each unreachable peer `%{node:
    binary, code: binary | nil, reason: binary | nil, fix: binary | nil, since: binary, polls:
    integer}` (the doctor's diagnosis code, the problem and its fix, `nil` until the first
    diagnosis arrives; `since`: the first update without a connection, RFC 3339 UTC);
  - `[:ecs_peers, :peer, :unreachable]`, when a peer's diagnosis is logged (its first, or one
    that changed): measurements `%{polls: integer, checked_ms: integer}` (the updates it has
    been unconnected for, how long the checks took), metadata `%{topology: atom, node: binary,
    code: binary, reason: binary, fix: binary, since: binary}`.
  """

  @doc false
  # The poll event and the failing sources' events of one update.
  @spec poll(atom(), EcsPeers.Update.t()) :: :ok
  def poll(topology, %EcsPeers.Update{} = update) do
    if loaded?() do
      failing = for src <- update.sources, src[:state] == "failing", do: src

      execute(
        [:ecs_peers, :poll, :stop],
        %{
          duration: System.convert_time_unit(update.duration_ms, :millisecond, :native),
          peers: update.peer_count,
          added: length(update.added),
          removed: length(update.removed),
          api_calls: Enum.reduce(update.sources, 0, &(&1.api_calls + &2)),
          failing_sources: length(failing),
          skipping_sources: Enum.count(update.sources, &(&1[:state] == "skipping")),
          absent_sources: Enum.count(update.sources, &(&1[:state] == "absent")),
          sharing_with: update.sharing_with
        },
        %{topology: topology, sources: update.sources}
      )

      for src <- failing do
        execute(
          [:ecs_peers, :source, :error],
          %{consecutive_failures: src.consecutive_failures},
          %{topology: topology, source: src.id, kind: src.error_kind, error: src.error}
        )
      end
    end

    :ok
  end

  @doc false
  # The sharing group's nodes changed (`nodes`: node-name binaries, [] when this node left).
  @spec sharing_members(atom(), String.t() | nil, [String.t()]) :: :ok
  def sharing_members(topology, key, nodes) do
    if loaded?() do
      execute([:ecs_peers, :sharing, :members], %{count: length(nodes)}, %{
        topology: topology,
        key: key,
        nodes: nodes
      })
    end

    :ok
  end

  @doc false
  # The cluster as this node sees it after an update: `%{expected:, connected:, unreachable:}`.
  @spec connections(atom(), %{
          expected: non_neg_integer(),
          connected: non_neg_integer(),
          unreachable: [map()]
        }) :: :ok
  def connections(topology, %{expected: expected, connected: connected, unreachable: unreachable}) do
    if loaded?() do
      execute(
        [:ecs_peers, :cluster, :connections],
        %{expected: expected, connected: connected, unreachable: length(unreachable)},
        %{topology: topology, unreachable: unreachable}
      )
    end

    :ok
  end

  @doc false
  # A peer's diagnosis, logged: `entry` as in the connections event's unreachable list.
  @spec unreachable(atom(), map(), %{polls: integer(), checked_ms: integer()}) :: :ok
  def unreachable(topology, entry, measurements) do
    if loaded?() do
      execute(
        [:ecs_peers, :peer, :unreachable],
        measurements,
        %{
          topology: topology,
          node: entry.node,
          code: entry.code,
          reason: entry.reason,
          fix: entry.fix,
          since: entry.since
        }
      )
    end

    :ok
  end

  defp loaded?, do: Code.ensure_loaded?(:telemetry)

  # apply/3: :telemetry is an optional dependency, not known when this package compiles alone.
  defp execute(event, measurements, metadata),
    do: apply(:telemetry, :execute, [event, measurements, metadata])
end
