defmodule EcsPeers.Update do
  @moduledoc """
  One poll's update, as the NIF sends it to the process that started a poller (the strategy's
  or the child's membership process): `{:ecs_peers, tag, {:update, %EcsPeers.Update{}}}`.

  The Rust half of this definition is `UpdateTerm` in native/ecs_peers_nif/src/encode.rs; a
  topology refuses to start when the loaded NIF names other fields (`check_nif/0`).

  Every update is self-contained, whatever the receiver skipped. What keeps 10,000 unchanged
  peers cheap: the node names and the dial entries travel as handles (a few bytes in each
  message, no binary that would make the receiver's garbage collector run), with the
  membership's fingerprint; a receiver that holds that membership does nothing, and reads the
  handles (`EcsPeers.Native.nodes/1`, `EcsPeers.Native.dial/1`, which make the atoms) only when
  it changed.

  Maps inside (statuses, peers, conflicts, events) have atom keys (the core's field names only)
  and binary, number, boolean or nil values.
  """

  @typedoc "A peer as the core reports it: `%{node: binary, ip: binary, region: binary, source: binary, ...}`."
  @type peer :: %{atom() => term()}

  @typedoc """
  - `poll`: the poll counter, from 1;
  - `taken_at`: when the poll finished, RFC 3339 text;
  - `duration_ms`: how long the poll round took, milliseconds;
  - `peer_count`: how many peers the membership has;
  - `membership`: the membership's fingerprint (a 64-bit integer): equal fingerprints, equal `nodes`;
  - `nodes`: handle to every peer's node name (this node left out), sorted;
    `EcsPeers.Native.nodes/1` → `{:ok, [node()]}`;
  - `dial`: handle to where each peer is dialled (the same handle while the entries are the
    same); `EcsPeers.Native.dial/1` → `{:ok, [{node(), :inet.ip_address(), port | nil}]}`, `nil`
    when the source reported no port (then the one configured distribution port applies), what
    `EcsPeers.Epmd.put_peers/1` takes;
  - `sources`: one status per source, in configuration order (`%{id:, state:, ok:, pending:,
    error:, error_kind:, consecutive_failures:, api_calls:, skipped:, poller:, received_from:,
    absent:, ...}`, as in `EcsPeers.status/1`; `state`: the core's one reading of the last
    answer, `"ok" | "skipping" | "absent" | "failing" | "pending"` (`"skipping"`: it answered
    but skipped every task or instance it found, `skipped` saying why), with `ok` true exactly
    for `"ok"` and `"absent"`; `absent`: why a region of a `regions` source has no stack, or
    `nil`; a `regions` source has one status per region);
  - `conflicts`: addresses claimed by several regions (never peers);
  - `local`: this node as a source reported it, or `nil`;
  - `left`: the source (its id) this node's task has left, or `nil`;
  - `sharing_with`: the sharing group's size, this node included (0: not sharing);
  - `shared_dropped`: received shared results dropped since start that named no source here or
    did not decode;
  - `added`, `removed`, `draining`: `[peer]` changed since the previous update sent to this
    receiver;
  - `events`: the core's membership events since the previous update (`%{event:
    "source_failing" | "source_recovered" | "conflict_found" | "local_left" | "tasks_skipped" |
    "poller_changed" | "poller_silent", message: binary, ...}`, `message` being the sentence to
    log);
  - `shared`: the results this node polled for its sharing group, opaque binaries for the other
    members (`EcsPeers.Native.receive_shared/3`).
  """
  @type t :: %__MODULE__{
          poll: pos_integer(),
          taken_at: String.t(),
          duration_ms: non_neg_integer(),
          peer_count: non_neg_integer(),
          membership: non_neg_integer(),
          nodes: reference(),
          dial: reference(),
          sources: [map()],
          conflicts: [map()],
          local: peer() | nil,
          left: String.t() | nil,
          sharing_with: non_neg_integer(),
          shared_dropped: non_neg_integer(),
          added: [peer()],
          removed: [peer()],
          draining: [peer()],
          events: [map()],
          shared: [binary()]
        }

  @fields [
    :poll,
    :taken_at,
    :duration_ms,
    :peer_count,
    :membership,
    :nodes,
    :dial,
    :sources,
    :conflicts,
    :local,
    :left,
    :sharing_with,
    :shared_dropped,
    :added,
    :removed,
    :draining,
    :events,
    :shared
  ]
  @enforce_keys @fields
  defstruct @fields

  @doc """
  `:ok` when the loaded NIF encodes exactly this struct's fields; `{:error, message}` naming
  the fields that differ (a NIF from another version, e.g. an old `ECS_PEERS_NIF_PATH`), or the
  NIF's own error when it is not loaded.
  """
  @spec check_nif() :: :ok | {:error, String.t()}
  def check_nif do
    with {:ok, fields} <- EcsPeers.native(fn -> {:ok, EcsPeers.Native.update_fields()} end),
         do: check_fields(fields)
  end

  # The keys of a source status this package reads (EcsPeers.Telemetry, EcsPeers.Membership,
  # EcsPeers.status/1's documentation): a NIF must encode each.
  @source_keys [
    :id,
    :state,
    :ok,
    :pending,
    :error,
    :error_kind,
    :consecutive_failures,
    :api_calls,
    :skipped,
    :absent
  ]

  @doc false
  # `fields`: the field names a NIF encodes the struct with, `sources` as `{:sources, keys}`
  # (the keys of each source status).
  @spec check_fields([atom() | {atom(), [atom()]}]) :: :ok | {:error, String.t()}
  def check_fields(fields) do
    names =
      Enum.map(fields, fn
        {name, _} -> name
        name -> name
      end)

    source_keys = for {:sources, keys} <- fields, key <- keys, do: key

    case {names -- @fields, @fields -- names, @source_keys -- source_keys} do
      {[], [], []} ->
        :ok

      {[], [], missing} ->
        {:error,
         "the loaded ecs-peers NIF speaks another update protocol than this EcsPeers " <>
           "(its source statuses have no #{inspect(missing)}): load the NIF built from the " <>
           "same version"}

      {extra, missing, _} ->
        {:error,
         "the loaded ecs-peers NIF speaks another update protocol than this EcsPeers " <>
           "(fields only the NIF has: #{inspect(extra)}; only EcsPeers.Update has: " <>
           "#{inspect(missing)}): load the NIF built from the same version"}
    end
  end
end
