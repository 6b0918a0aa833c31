defmodule EcsPeers.Status do
  @moduledoc false
  # Which membership processes (strategy or child) run a topology on this node, for
  # `EcsPeers.status/1`: a `Registry` with duplicate keys (a strategy and a child may share a
  # topology name), supervised by `EcsPeers.Application`. A process is unregistered when it
  # exits. Each process also publishes its status in the registry's metadata, so
  # `EcsPeers.status/1` answers while the process is busy (blocked in a connect).

  @registry __MODULE__

  @doc false
  def child_spec(_opts), do: Registry.child_spec(keys: :duplicate, name: @registry)

  @doc """
  Registers the calling process under `topology`: `:ok`, or `{:error, message}` when the
  registry is not running (the `:ecs_peers` application is not started).
  """
  @spec register(atom()) :: :ok | {:error, String.t()}
  def register(topology) do
    {:ok, _} = Registry.register(@registry, topology, nil)
    :ok
  rescue
    ArgumentError ->
      {:error,
       "the :ecs_peers application is not started (its status registry is not running): " <>
         "start it with Application.ensure_all_started(:ecs_peers), or list ecs_peers in " <>
         "your project's deps so the release starts it"}
  end

  @doc """
  Publishes the calling process's status (what `EcsPeers.status/1` renders), read with
  `published/1` without calling the process: `:ok`, also when the registry is not running.
  """
  @spec publish(map()) :: :ok
  def publish(status) do
    Registry.put_meta(@registry, {:status, self()}, status)
  rescue
    ArgumentError -> :ok
  end

  @doc "What `pid` published last: `{:ok, status}`, or `:error` when it published nothing."
  @spec published(pid()) :: {:ok, map()} | :error
  def published(pid) do
    Registry.meta(@registry, {:status, pid})
  rescue
    ArgumentError -> :error
  end

  @doc "Forgets what the calling process published (it stops)."
  @spec unpublish() :: :ok
  def unpublish do
    Registry.delete_meta(@registry, {:status, self()})
  rescue
    ArgumentError -> :ok
  end

  @doc "The membership processes of `topology` on this node."
  @spec whereis(atom()) :: [pid()]
  def whereis(topology) do
    for {pid, _} <- Registry.lookup(@registry, topology), do: pid
  rescue
    ArgumentError -> []
  end
end
