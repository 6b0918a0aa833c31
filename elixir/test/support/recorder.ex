defmodule EcsPeers.Test.Recorder do
  @moduledoc false
  # Connect/disconnect/list MFAs for tests (as libcluster's own test/support/nodes.ex): they
  # report to a test pid and keep a "connected" set in an Agent, so disconnect_nodes/4 sees
  # which nodes are connected.

  def start(caller) do
    {:ok, agent} = Agent.start_link(fn -> MapSet.new() end)
    %{caller: caller, agent: agent}
  end

  def connect(%{caller: caller, agent: agent}, result, node) do
    send(caller, {:connect, node})
    if result == true, do: Agent.update(agent, &MapSet.put(&1, node))
    result
  end

  def disconnect(%{caller: caller, agent: agent}, node) do
    send(caller, {:disconnect, node})
    Agent.update(agent, &MapSet.delete(&1, node))
    true
  end

  def list_nodes(%{caller: caller, agent: agent}) do
    send(caller, :listed)
    agent |> Agent.get(& &1) |> MapSet.to_list()
  end

  def raising_connect(_node), do: :ok

  # A connect that, while `gate` (an Agent) holds :closed, blocks its caller for `gated` until
  # the test sends `:release` to the pid it was told of (`{:blocked, pid, node}`), as a connect
  # to a peer that does not answer blocks for net_setuptime; then `gated` fails (unreachable).
  # Any other node connects at once.
  def gated_connect(%{caller: caller} = rec, {gated, gate}, node) when node == gated do
    if Agent.get(gate, & &1) == :closed do
      send(caller, {:blocked, self(), node})

      receive do
        :release -> :ok
      end
    end

    connect(rec, false, node)
  end

  def gated_connect(rec, _gate, node), do: connect(rec, true, node)

  # A connect that blocks its caller for `ms` (as a connect to an address that drops packets
  # does, for OTP's net_setuptime), then succeeds.
  def slow_connect(%{caller: caller, agent: agent}, ms, node) do
    send(caller, {:connect, node})
    Process.sleep(ms)
    Agent.update(agent, &MapSet.put(&1, node))
    true
  end
end
