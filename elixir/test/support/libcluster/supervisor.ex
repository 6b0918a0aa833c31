# Test double of libcluster 3.5.0's Cluster.Supervisor (lib/supervisor.ex): one child per
# topology, %{id: topology, start: {strategy, :start_link, [[state]]}}, default MFAs, forced
# one_for_one; the strategy's own child_spec/1 is not used.
defmodule Cluster.Supervisor do
  @moduledoc false
  use Supervisor

  def start_link([config]), do: start_link([config, []])

  def start_link([config, opts]) do
    Supervisor.start_link(__MODULE__, [config, opts], opts)
  end

  @impl true
  def init([config, opts]) do
    opts = Keyword.put(opts, :strategy, :one_for_one)
    children = get_configured_topologies(config)
    Supervisor.init(children, opts)
  end

  defp get_configured_topologies(config) do
    for {topology, spec} <- config do
      strategy = Keyword.fetch!(spec, :strategy)

      state = %Cluster.Strategy.State{
        topology: topology,
        connect: Keyword.get(spec, :connect, {:net_kernel, :connect_node, []}),
        disconnect: Keyword.get(spec, :disconnect, {:erlang, :disconnect_node, []}),
        list_nodes: Keyword.get(spec, :list_nodes, {:erlang, :nodes, [:connected]}),
        config: Keyword.get(spec, :config, [])
      }

      %{id: topology, start: {strategy, :start_link, [[state]]}}
    end
  end
end
