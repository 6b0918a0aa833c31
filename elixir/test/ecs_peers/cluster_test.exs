defmodule EcsPeers.ClusterTest do
  # EcsPeers.Cluster (the libcluster-free child) and the membership rule it shares with the
  # strategy (EcsPeers.Membership). Not async: the emulator's faults and stop mode are global.
  use ExUnit.Case, async: false
  # Needs the AWS emulator: left out of the quick tier (mix test --exclude emulator).
  @moduletag :emulator

  import ExUnit.CaptureLog

  alias Cluster.Strategy.State
  alias EcsPeers.Test.{Emu, Recorder}

  setup do
    emu = Emu.shared()
    Emu.clear_faults(emu)

    on_exit(fn ->
      Emu.clear_faults(emu)
      Emu.world(emu, "config", %{stop: "immediate"})
    end)

    {:ok, emu: emu, rec: Recorder.start(self())}
  end

  defp cluster_name, do: "k#{System.unique_integer([:positive])}"

  defp seed(emu, cluster, subnet, n) do
    world =
      Emu.seed(emu, %{
        ecs: [
          %{
            region: "eu-west-2",
            cluster: cluster,
            subnet: subnet,
            tasks: [%{family: "api", count: n, group: "service:api"}]
          }
        ]
      })

    world["ecs"]["eu-west-2/#{cluster}"]["running"]
  end

  defp config(emu, cluster) do
    [
      node_basename: "app",
      endpoint_url: emu.endpoint,
      max_attempts: 1,
      polling_interval: 200,
      jitter: 0.0,
      poll_timeout: 3_000,
      sources: [[type: :ecs, region: "eu-west-2", cluster: cluster, service: "api"]]
    ]
  end

  defp links(rec) do
    [
      connect: {Recorder, :connect, [rec, true]},
      disconnect: {Recorder, :disconnect, [rec]},
      list_nodes: {Recorder, :list_nodes, [rec]}
    ]
  end

  defp node_of(task), do: String.to_atom("app@" <> task["ip"])

  defp polls(n) do
    for _ <- 1..(2 * n), do: assert_receive(:listed, 5_000)
    :ok
  end

  test "the child connects, drops a stopped task, logs failures and emits telemetry", %{
    emu: emu,
    rec: rec
  } do
    c = cluster_name()
    [a, b] = seed(emu, c, "10.231.0.0/24", 2)
    me = self()

    :telemetry.attach(
      "c-poll",
      [:ecs_peers, :poll, :stop],
      fn _, m, meta, _ -> send(me, {:poll, m, meta}) end,
      nil
    )

    on_exit(fn -> :telemetry.detach("c-poll") end)

    log =
      capture_log(fn ->
        start_supervised!({EcsPeers.Cluster, config(emu, c) ++ links(rec) ++ [name: :web]})
        assert_receive {:connect, n1}, 5_000
        assert_receive {:connect, n2}, 5_000
        assert MapSet.new([n1, n2]) == MapSet.new([node_of(a), node_of(b)])
        assert_receive {:poll, %{peers: 2}, %{topology: :web}}, 5_000

        Emu.fault(emu, %{
          operation: "ListTasks",
          region: "eu-west-2",
          count: 1_000,
          status: 500,
          code: "ServerException",
          message: "injected"
        })

        polls(3)
        refute_received {:disconnect, _}
        Emu.clear_faults(emu)
        Emu.stop_tasks(emu, "eu-west-2", c, [b["arn"]])
        gone = node_of(b)
        assert_receive {:disconnect, ^gone}, 5_000
      end)

    assert log =~ "[ecs_peers:web] connected to #{inspect(node_of(a))}"
    assert log =~ "[ecs_peers:web] source ecs:eu-west-2/#{c}/api is failing"
    assert log =~ "[ecs_peers:web] source ecs:eu-west-2/#{c}/api recovered"
    assert log =~ "[ecs_peers:web] disconnected from #{inspect(node_of(b))}"
  end

  test "the child explains itself: an unconnected peer is diagnosed once, the telemetry shows the gap",
       %{emu: emu, rec: rec} do
    c = cluster_name()
    [t] = seed(emu, c, "10.235.0.0/24", 1)
    name = Atom.to_string(node_of(t))
    me = self()

    :telemetry.attach(
      "c-connections",
      [:ecs_peers, :cluster, :connections],
      fn _, m, meta, _ -> send(me, {:connections, m, meta}) end,
      nil
    )

    on_exit(fn -> :telemetry.detach("c-connections") end)
    failing = Keyword.put(links(rec), :connect, {Recorder, :connect, [rec, false]})

    log =
      capture_log(fn ->
        start_supervised!({EcsPeers.Cluster, config(emu, c) ++ failing ++ [name: :explained]})
        # Nothing answers at 10.235.0.x: the doctor's checks diagnose it (no route, or dropped).
        assert_receive {:connections, %{expected: 1, connected: 0, unreachable: 1},
                        %{topology: :explained, unreachable: [%{node: ^name, code: code}]}}
                       when code != nil,
                       20_000

        # Two more checks' worth of polls: the same diagnosis is not said again.
        polls(7)
      end)

    said =
      for l <- String.split(log, "\n"),
          l =~ "[ecs_peers:explained] cannot connect to #{name} ",
          do: l

    assert [line] = said, log
    assert line =~ ~r/\(\d+ polls\): \[\w+\] .+\. Fix: .+/
  end

  test "the child: :ignore starts nothing, a bad key stops it from starting with the key named" do
    assert :ignore = EcsPeers.Cluster.start_link(:ignore)
    # start_link links: on OTP 25 a child whose init stops also sends its caller an exit signal.
    Process.flag(:trap_exit, true)

    {result, log} =
      with_log(fn ->
        EcsPeers.Cluster.start_link(
          node_basename: "app",
          sources: [[type: :ecs, region: "eu-west"]]
        )
      end)

    assert {:error, {:invalid_config, "sources[0]" <> _}} = result
    assert log =~ "[ecs_peers:ecs] EcsPeers.Cluster cannot start: sources[0]"
  end

  # A task stopping goes DEACTIVATING (draining) before STOPPED. Its node leaves the cluster
  # itself (global), so its peers must not connect it again, nor cut it before ECS says STOPPED.
  defp child(:child, config, links), do: {EcsPeers.Cluster, config ++ links}

  defp child(:strategy, config, links) do
    {EcsPeers.Strategy,
     [
       %State{
         topology: :ecs,
         config: config,
         connect: links[:connect],
         disconnect: links[:disconnect],
         list_nodes: links[:list_nodes]
       }
     ]}
  end

  for kind <- [:child, :strategy] do
    test "#{kind}: a peer whose connect hangs does not hold up connecting the others",
         %{emu: emu, rec: rec} do
      c = cluster_name()
      tasks = seed(emu, c, "10.236.0.0/24", 3)
      # The first in the order the nodes are handed over: one connect after another would
      # reach none of the others while it hangs.
      [gated | others] = tasks |> Enum.map(&node_of/1) |> Enum.sort()
      {:ok, gate} = Agent.start_link(fn -> :closed end)
      links = Keyword.put(links(rec), :connect, {Recorder, :gated_connect, [rec, {gated, gate}]})

      capture_log(fn ->
        start_supervised!(child(unquote(kind), config(emu, c), links))
        assert_receive {:blocked, hung, ^gated}, 5_000

        for n <- others, do: assert_receive({:connect, ^n}, 5_000)
        assert Enum.sort(Agent.get(rec.agent, &MapSet.to_list/1)) == others

        # Released, it fails (an unreachable peer); the others stay connected, nothing crashed.
        Agent.update(gate, fn _ -> :open end)
        send(hung, :release)
        assert_receive {:connect, ^gated}, 5_000
        polls(2)
        refute_received {:disconnect, _}
      end)
    end

    test "#{kind}: a draining peer is kept while connected, never connected anew, dropped when STOPPED",
         %{emu: emu, rec: rec} do
      c = cluster_name()
      [a, b] = seed(emu, c, "10.232.0.0/24", 2)
      Emu.world(emu, "config", %{stop: "hold"})

      capture_log(fn ->
        start_supervised!(child(unquote(kind), config(emu, c), links(rec)))
        assert_receive {:connect, _}, 5_000
        assert_receive {:connect, _}, 5_000

        Emu.stop_tasks(emu, "eu-west-2", c, [b["arn"]])
        polls(3)
        leaving = node_of(b)
        refute_received {:disconnect, ^leaving}

        # The leaving node goes away (it left the cluster itself): it is not connected again.
        Agent.update(rec.agent, &MapSet.delete(&1, leaving))
        polls(3)
        refute_received {:connect, ^leaving}

        Emu.world(emu, "lifecycle", %{
          region: "eu-west-2",
          cluster: c,
          tasks: [b["arn"]],
          lastStatus: "STOPPED"
        })

        polls(3)
        refute_received {:connect, ^leaving}
        stay = node_of(a)
        refute_received {:disconnect, ^stay}
      end)
    end
  end
end
