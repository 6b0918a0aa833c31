defmodule EcsPeers.Status do
  @moduledoc false
  # Which membership processes (strategy or child) run a topology on this node, for
  # `EcsPeers.status/1`: a `Registry` with duplicate keys (a strategy and a child may share a
  # topology name), supervised by `EcsPeers.Application`. A process is unregistered when it
  # exits. Each process also publishes its status in a table of its own (the registered value),
  # so `EcsPeers.status/1` answers while the process is busy (blocked in a connect).

  @registry __MODULE__

  @doc false
  def child_spec(_opts), do: Registry.child_spec(keys: :duplicate, name: @registry)

  @doc """
  Registers the calling process under `topology`, with a table of its own (protected: it
  writes, anyone reads; it goes when the process exits) where it publishes its status:
  `{:ok, table}`, or `{:error, message}` when the registry is not running (the `:ecs_peers`
  application is not started).
  """
  @spec register(atom()) :: {:ok, :ets.tid()} | {:error, String.t()}
  def register(topology) do
    table = :ets.new(__MODULE__, [:set, :protected, read_concurrency: true])

    try do
      {:ok, _} = Registry.register(@registry, topology, table)
      {:ok, table}
    rescue
      ArgumentError ->
        :ets.delete(table)

        {:error,
         "the :ecs_peers application is not started (its status registry is not running): " <>
           "start it with Application.ensure_all_started(:ecs_peers), or list ecs_peers in " <>
           "your project's deps so the release starts it"}
    end
  end

  @doc """
  Publishes the calling process's status (what `EcsPeers.status/1` renders) in its `table`,
  read with `published/1` without calling the process.
  """
  @spec publish(:ets.tid(), map()) :: :ok
  def publish(table, status) do
    :ets.insert(table, {:status, status})
    :ok
  end

  @doc """
  What the registered process `pid` published last: `{:ok, status}`, or `:error` when it is
  not registered, has published nothing, or has exited.
  """
  @spec published(pid()) :: {:ok, map()} | :error
  def published(pid) do
    tables =
      for key <- Registry.keys(@registry, pid),
          {^pid, t} <- Registry.lookup(@registry, key),
          do: t

    case tables do
      [table | _] ->
        case :ets.lookup(table, :status) do
          [{:status, status}] -> {:ok, status}
          [] -> :error
        end

      [] ->
        :error
    end
  rescue
    ArgumentError -> :error
  end

  @doc "The membership processes of `topology` on this node."
  @spec whereis(atom()) :: [pid()]
  def whereis(topology) do
    for {pid, _} <- Registry.lookup(@registry, topology), do: pid
  rescue
    ArgumentError -> []
  end
end
