# Test double of libcluster 3.5.0's public strategy API (Hex is unreachable in this project's CI).
# It follows lib/strategy/strategy.ex of libcluster 3.5.0 in behaviour: the same callbacks, the
# same `use` injection, the same connect/disconnect semantics, return values, log lines and
# telemetry events. One deliberate difference: telemetry is emitted only when :telemetry is
# loaded (real libcluster depends on it). Real-library compatibility is checked separately.
defmodule Cluster.Strategy do
  @moduledoc false

  @type topology :: atom
  @type bad_nodes :: [{node, reason :: term}]
  @type mfa_tuple :: {module, atom, [term]}
  @type strategy_args :: [Cluster.Strategy.State.t()]

  @callback child_spec(strategy_args) :: Supervisor.child_spec()
  @callback start_link(strategy_args) :: {:ok, pid} | :ignore | {:error, reason :: term}

  defmacro __using__(_) do
    quote do
      @behaviour Cluster.Strategy

      @impl true
      def child_spec(args) do
        %{id: __MODULE__, type: :worker, start: {__MODULE__, :start_link, [args]}}
      end

      defoverridable child_spec: 1
    end
  end

  @spec connect_nodes(topology, mfa_tuple, mfa_tuple, [atom()]) :: :ok | {:error, bad_nodes}
  def connect_nodes(topology, {_, _, _} = connect, {_, _, _} = list_nodes, nodes)
      when is_list(nodes) do
    {connect_mod, connect_fun, connect_args} = connect
    {list_mod, list_fun, list_args} = list_nodes
    ensure_exported!(list_mod, list_fun, length(list_args))
    current_node = Node.self()

    need_connect =
      nodes
      |> difference(apply(list_mod, list_fun, list_args))
      |> Enum.reject(fn n -> current_node == n end)

    bad_nodes =
      Enum.reduce(need_connect, [], fn n, acc ->
        fargs = connect_args ++ [n]
        ensure_exported!(connect_mod, connect_fun, length(fargs))
        start = System.monotonic_time()

        case apply(connect_mod, connect_fun, fargs) do
          true ->
            telemetry([:connect_node, :ok], %{duration: System.monotonic_time() - start}, %{
              node: n,
              topology: topology
            })

            Cluster.Logger.info(topology, "connected to #{inspect(n)}")
            acc

          false ->
            telemetry([:connect_node, :error], %{}, %{
              node: n,
              topology: topology,
              reason: :unreachable
            })

            Cluster.Logger.warn(topology, "unable to connect to #{inspect(n)}")
            [{n, false} | acc]

          :ignored ->
            telemetry([:connect_node, :error], %{}, %{
              node: n,
              topology: topology,
              reason: :not_part_of_network
            })

            Cluster.Logger.warn(
              topology,
              "unable to connect to #{inspect(n)}: not part of network"
            )

            [{n, :ignored} | acc]
        end
      end)

    case bad_nodes do
      [] -> :ok
      _ -> {:error, bad_nodes}
    end
  end

  @spec disconnect_nodes(topology, mfa_tuple, mfa_tuple, [atom()]) :: :ok | {:error, bad_nodes}
  def disconnect_nodes(topology, {_, _, _} = disconnect, {_, _, _} = list_nodes, nodes)
      when is_list(nodes) do
    {disconnect_mod, disconnect_fun, disconnect_args} = disconnect
    {list_mod, list_fun, list_args} = list_nodes
    ensure_exported!(list_mod, list_fun, length(list_args))
    current_node = Node.self()

    need_disconnect =
      nodes
      |> intersection(apply(list_mod, list_fun, list_args))
      |> Enum.reject(fn n -> current_node == n end)

    bad_nodes =
      Enum.reduce(need_disconnect, [], fn n, acc ->
        fargs = disconnect_args ++ [n]
        ensure_exported!(disconnect_mod, disconnect_fun, length(fargs))
        start = System.monotonic_time()

        case apply(disconnect_mod, disconnect_fun, fargs) do
          true ->
            telemetry([:disconnect_node, :ok], %{duration: System.monotonic_time() - start}, %{
              node: n,
              topology: topology
            })

            Cluster.Logger.info(topology, "disconnected from #{inspect(n)}")
            acc

          false ->
            telemetry([:disconnect_node, :error], %{}, %{
              node: n,
              topology: topology,
              reason: :already_disconnected
            })

            Cluster.Logger.warn(
              topology,
              "disconnect from #{inspect(n)} failed because we're already disconnected"
            )

            acc

          :ignored ->
            telemetry([:disconnect_node, :error], %{}, %{
              node: n,
              topology: topology,
              reason: :not_part_of_network
            })

            Cluster.Logger.warn(
              topology,
              "disconnect from #{inspect(n)} failed because it is not part of the network"
            )

            acc

          reason ->
            telemetry([:disconnect_node, :error], %{}, %{
              node: n,
              topology: topology,
              reason: inspect(reason)
            })

            Cluster.Logger.warn(
              topology,
              "disconnect from #{inspect(n)} failed with: #{inspect(reason)}"
            )

            [{n, reason} | acc]
        end
      end)

    case bad_nodes do
      [] -> :ok
      _ -> {:error, bad_nodes}
    end
  end

  def intersection(_a, []), do: []
  def intersection([], _b), do: []

  def intersection(a, b) when is_list(a) and is_list(b),
    do: MapSet.intersection(MapSet.new(a), MapSet.new(b))

  def difference(a, []), do: a
  def difference([], _b), do: []

  def difference(a, b) when is_list(a) and is_list(b),
    do: MapSet.difference(MapSet.new(a), MapSet.new(b))

  defp ensure_exported!(mod, fun, arity) do
    unless function_exported?(mod, fun, arity) do
      raise "#{mod}.#{fun}/#{arity} is undefined!"
    end
  end

  defp telemetry(event, measurements, metadata) do
    if Code.ensure_loaded?(:telemetry) do
      apply(:telemetry, :execute, [[:libcluster | event], measurements, metadata])
    end
  end
end
