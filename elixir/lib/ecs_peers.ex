defmodule EcsPeers do
  @moduledoc """
  Discover Erlang/Elixir peers on AWS ECS and Cloud Map, across regions.

  Clustering is `EcsPeers.Strategy` (with libcluster) or `EcsPeers.Cluster` (a child for apps
  without libcluster); one rule serves both. This module is for scripts and remote consoles:

      iex> EcsPeers.discover(sources: [[type: :ecs, region: "eu-west-2", cluster: "web", service: "api"]])
      {:ok, %{peers: [%{node: "app@10.1.0.5", region: "eu-west-2", ...}], sources: [...], ...}}

  Configuration keys are documented in `EcsPeers.Strategy`; they are the same everywhere. Unless
  `node_basename` or `node_name` is given, peers are named after this node: `node()`'s name
  part (without the `-<task id>` a bridge- or host-mode node carries: `my_app-4e3c…@10.0.1.5`
  names its peers after `my_app`; the core's rule), or, in a console that is not distributed (`iex -S mix`), the release's name
  (`RELEASE_NAME`, else the Mix project's app: what a release names its node by default).

  ## Boot: a bad config or a missing NIF stops the application

  Like a bad `Repo` configuration, a bad key or value, or a NIF that did not load, stops
  `EcsPeers.Strategy` from starting, so `Cluster.Supervisor` and the application do not start
  (a release exits at boot). The log names the key and what is expected, e.g.

      [error] [libcluster:ecs] EcsPeers.Strategy cannot start: sources[0].region: "eu-west" is not an AWS region name; expected e.g. "eu-west-2" or "us-east-1"
      [notice] Application my_app exited: MyApp.Application.start(:normal, []) returned an error: shutdown: failed to start child: Cluster.Supervisor
          ** (EXIT) shutdown: failed to start child: :ecs
              ** (EXIT) {:invalid_config, "sources[0].region: ..."}

  A NIF that did not load gives `EcsPeers.Strategy cannot start: the ecs-peers NIF is not
  loaded: <what was tried>: <reason>. <the fix for how this copy was built>`. Functions of this
  module return that same message as `{:error, message}`; the VM itself never crashes on it.
  AWS failing at boot (unreachable, throttled, no credentials) does not stop anything: it is
  logged per source and retried on every poll.
  """

  @typedoc "A configuration: a keyword list (or map) of the keys in `EcsPeers.Strategy`."
  @type config :: keyword() | map()

  @typedoc """
  One poll's result: `peers` (sorted by `node`), `sources` (one status per source, in
  configuration order, a failing one with `failure: %{kind:, action:, message:, fix:}`),
  `conflicts`, `local` (this node, when a source lists it) and `left` (the source this node's task
  has left, or `nil`). Keys are atoms; values are binaries, numbers, booleans.
  """
  @type update :: %{optional(atom()) => term()}

  @doc """
  Polls every source once and returns the merged result.

  Runs on the NIF's own threads; the caller waits (at most `poll_timeout` plus 5 s, or
  `:timeout` in `opts`) in a `receive`, so no scheduler is blocked.
  """
  @spec discover(config(), keyword()) :: {:ok, update()} | {:error, String.t()}
  def discover(config, opts \\ []) do
    with {:ok, {validated, settings}} <- configure(config),
         tag = :erlang.unique_integer([:positive]),
         {:ok, :ok} <- native(fn -> EcsPeers.Native.discover(validated, self(), tag) end) do
      timeout = Keyword.get(opts, :timeout, settings.poll_timeout + 5_000)

      receive do
        {:ecs_peers, ^tag, {:discovered, update}} -> {:ok, update}
      after
        timeout -> {:error, "no answer within #{timeout} ms"}
      end
    end
  end

  @typedoc """
  What a running topology knows: `%{topology: atom, node: binary, poll: integer, sources:
  [status], peers: [node binary], sharing: %{enabled: boolean, key: binary | nil, members:
  [node binary], dropped: integer, core_dropped: integer}}` (`dropped`: messages for another
  group or while out of the group; `core_dropped`: results the core dropped that named no
  source here or did not decode; those for a source are in its `shared_dropped`). Each source status is the core's, as in `update()` (its
  `state`, `"ok" | "skipping" | "absent" | "failing" | "pending"`, the one the CLI's STATUS
  shows: `"skipping"` when it answered but skipped every task it found, `skipped` saying why), with
  the sharing fields `poller` (the node that polls the source, `nil` when this node does),
  `received_from` (whose result was applied, `nil` when polled here), `received_at` and
  `shared_dropped`; `api_calls_total` counts this node's own AWS calls since start.

  The cluster as this node sees it: `expected` (node binaries: the peers discovery lists that
  this node should be connected to, draining ones left out), `connected` (those of them it is
  connected to, by the last connect), and `unreachable`: `[%{node: binary, code: binary | nil,
  reason: binary | nil, fix: binary | nil, since: binary, polls: integer}]`, the peers it has
  not been connected to for more than two polls, with the diagnosis of `ecs-peers doctor`'s
  checks run from this node (`code`, the problem as `reason`, and its `fix`; `nil` until the
  first diagnosis arrives), `since` the first update without a connection (RFC 3339, UTC) and
  `polls` how many polls that has lasted.
  """
  @type status :: %{atom() => term()}

  @doc """
  The status of a running `EcsPeers.Strategy` or `EcsPeers.Cluster` on this node, by topology
  name (the libcluster topology, or the child's `name`) or by pid: the last poll's sources
  (who polls each one and whether its result was polled here or received, and from whom), its
  peers, the members of the sharing group (`share_polling`), and the peers expected,
  connected and unreachable (with why). It answers while the strategy is busy connecting (the
  process publishes its status after each change; the caller reads it).

      iex> EcsPeers.status(:ecs)
      {:ok, %{poll: 42, peers: ["app@10.0.1.7"], sharing: %{members: ["app@10.0.1.5", ...]},
              sources: [%{id: "ecs:eu-west-2/web/api", poller: "app@10.0.1.5", ...}],
              expected: ["app@10.0.1.7"], connected: [],
              unreachable: [%{node: "app@10.0.1.7", code: "cookie_mismatch", reason: "...",
                              fix: "...", since: "2026-12-05T08:18:34.212Z", polls: 5}], ...}}

  `{:error, message}` when no such process runs here, when two do (a strategy and a child with
  the same topology name: pass the pid), or when it does not answer within 5 s.
  """
  @spec status(atom() | pid()) :: {:ok, status()} | {:error, String.t()}
  def status(pid) when is_pid(pid) do
    {:ok, EcsPeers.Membership.status(pid)}
  catch
    :exit, reason ->
      {:error, "#{inspect(pid)} did not answer the status call: #{inspect(reason)}"}
  end

  def status(topology) when is_atom(topology) do
    case EcsPeers.Status.whereis(topology) do
      [pid] ->
        status(pid)

      [] ->
        {:error,
         "no EcsPeers.Strategy or EcsPeers.Cluster of topology #{inspect(topology)} runs on this node"}

      pids ->
        {:error,
         "#{length(pids)} processes run topology #{inspect(topology)} (#{inspect(pids)}); pass the pid"}
    end
  end

  @doc """
  Validates a configuration: `{:ok, %{polling_interval: ms, poll_timeout: ms, share_polling:
  boolean, share_polling_given: boolean, sharing_key: binary}}` (`share_polling_given`: whether
  the key was given rather than left to its default; `sharing_key`: 16 hex digits, equal on the
  nodes that may share poll results), or `{:error, message}` naming the key, the bad value and what is
  expected.
  """
  @spec validate(config()) :: {:ok, map()} | {:error, String.t()}
  def validate(config) do
    with {:ok, {_validated, settings}} <- configure(config), do: {:ok, settings}
  end

  @doc false
  # The one validation of a configuration for this node: `{:ok, {validated, settings}}`, the
  # validated config being the NIF's handle that starts pollers (so a running topology never
  # validates again), or `{:error, message}`.
  def configure(config), do: native(fn -> EcsPeers.Native.config(config, this_node()) end)

  @doc "Every configuration key: `%{key:, scope:, kind:, default:, doc:}`."
  @spec keys() :: [map()]
  def keys do
    case native(fn -> {:ok, EcsPeers.Native.keys()} end) do
      {:ok, keys} -> keys
      {:error, message} -> raise message
    end
  end

  @doc false
  # Who this node is, for the core to derive this node's name (left out of the peers) and the
  # default node_basename: node(), and the release's name (RELEASE_NAME in a release, else the
  # Mix project's app), which a node that is not distributed is named by default; and whether
  # it runs with long names (:net_kernel.longnames/0: false for -sname, :ignored when not
  # distributed), as the core refuses long peer names for a short-named node.
  def this_node,
    do: {node(), System.get_env("RELEASE_NAME") || mix_app(), :net_kernel.longnames()}

  # The Mix project's app in a Mix console; nil elsewhere (a release, a plain `elixir` script
  # where Mix is loadable but not running). apply/3: Mix is not a dependency of this package.
  defp mix_app do
    # Mix's project stack runs only in a Mix console (checked first: it loads no module).
    with pid when is_pid(pid) <- Process.whereis(Mix.ProjectStack),
         app when is_atom(app) and app != nil <- apply(Mix.Project, :config, [])[:app] do
      Atom.to_string(app)
    else
      _ -> nil
    end
  catch
    :exit, _ -> nil
  end

  @doc false
  # Calls the NIF; a missing NIF, a panic or an argument the NIF cannot decode becomes
  # {:error, message}, never a crash. Every exception is rescued, and the struct matched, not
  # assumed: a NIF's badarg arrives as %ArgumentError{} (Elixir normalises Erlang errors), which
  # has no :original.
  def native(fun) do
    fun.()
  rescue
    e ->
      case e do
        %ErlangError{original: :nif_not_loaded} ->
          {:error,
           "the ecs-peers NIF is not loaded: " <>
             EcsPeers.Native.Loader.why(EcsPeers.Native.builder())}

        %ErlangError{original: other} ->
          {:error, "ecs-peers NIF failed: #{inspect(other)}"}

        other ->
          {:error, "ecs-peers NIF failed: #{Exception.message(other)}"}
      end
  end
end
