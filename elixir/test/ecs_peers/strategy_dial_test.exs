defmodule EcsPeers.StrategyDialTest do
  # The strategy hands every peer's address and distribution port (the update's `dial`, encoded
  # by the NIF from the core's peers) to the EPMD-less distribution bridge, EcsPeers.Epmd,
  # before it connects. Here the bridge's lookup runs in this VM (its table owner started
  # directly, as kernel would start it for -epmd_module), so the test reads what a node would
  # dial. Not async: the lookup is a named table, one per VM.
  use ExUnit.Case, async: false
  # Needs the AWS emulator: left out of the quick tier (mix test --exclude emulator).
  @moduletag :emulator

  import ExUnit.CaptureLog

  alias Cluster.Strategy.State
  alias EcsPeers.Test.{Emu, Recorder}

  setup do
    emu = Emu.shared()
    rec = Recorder.start(self())
    {:ok, emu: emu, rec: rec}
  end

  defp start_strategy(emu, rec, sources) do
    state = %State{
      topology: :ecs,
      config: [
        node_basename: "app",
        endpoint_url: emu.endpoint,
        max_attempts: 1,
        polling_interval: 200,
        jitter: 0.0,
        poll_timeout: 3_000,
        sources: sources
      ],
      connect: {Recorder, :connect, [rec, true]},
      disconnect: {Recorder, :disconnect, [rec]},
      list_nodes: {Recorder, :list_nodes, [rec]}
    }

    start_supervised!({EcsPeers.Strategy, [state]})
  end

  defp start_bridge do
    start_supervised!(%{id: EcsPeers.Epmd, start: {EcsPeers.Epmd, :start_link, []}})
  end

  defp ip(text) do
    {:ok, ip} = :inet.parse_address(String.to_charlist(text))
    ip
  end

  test "each peer's address is in the bridge's lookup before it is connected; a stopped one leaves it",
       %{emu: emu, rec: rec} do
    c = "d#{System.unique_integer([:positive])}"

    world =
      Emu.seed(emu, %{
        ecs: [
          %{
            region: "eu-west-2",
            cluster: c,
            subnet: "10.231.0.0/24",
            tasks: [%{family: "api", count: 2}]
          }
        ]
      })

    [a, b] = world["ecs"]["eu-west-2/#{c}"]["running"]
    start_bridge()

    # With no dial information the bridge knows nobody (the control case).
    assert EcsPeers.Epmd.lookup("app@" <> a["ip"]) == :error

    capture_log(fn ->
      start_strategy(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c]])
      # The strategy connects only after handing the addresses over: at the first connect,
      # both peers are already in the lookup. awsvpc tasks report no port of their own, so
      # the port is the one every node listens on (ECS_PEERS_DIST_PORT, 4370 by default).
      assert_receive {:connect, _}, 5_000

      for t <- [a, b] do
        assert EcsPeers.Epmd.lookup("app@" <> t["ip"]) == {:ok, {ip(t["ip"]), 4370}}
      end

      Emu.stop_tasks(emu, "eu-west-2", c, [b["arn"]])
      gone = String.to_atom("app@" <> b["ip"])
      assert_receive {:disconnect, ^gone}, 5_000
      assert EcsPeers.Epmd.lookup("app@" <> b["ip"]) == :error
      assert EcsPeers.Epmd.lookup("app@" <> a["ip"]) == {:ok, {ip(a["ip"]), 4370}}
    end)
  end

  test "the NIF's update carries node, address and port per peer, in the peers' order",
       %{emu: emu} do
    c = "d#{System.unique_integer([:positive])}"

    world =
      Emu.seed(emu, %{
        ecs: [
          %{
            region: "eu-west-2",
            cluster: c,
            subnet: "10.232.0.0/24",
            tasks: [%{family: "api", count: 2}]
          }
        ]
      })

    tasks = world["ecs"]["eu-west-2/#{c}"]["running"]

    config = [
      node_basename: "app",
      endpoint_url: emu.endpoint,
      max_attempts: 1,
      polling_interval: 100,
      sources: [[type: :ecs, region: "eu-west-2", cluster: c]]
    ]

    {:ok, {validated, _settings}} = EcsPeers.configure(config)
    {:ok, poller} = EcsPeers.Native.start(validated, self(), 7)
    assert_receive {:ecs_peers, 7, {:update, %EcsPeers.Update{} = u}}, 5_000
    EcsPeers.Native.stop(poller)
    # A real update has exactly the struct's keys (the Rust and Elixir definitions agree).
    assert Enum.sort(Map.keys(u)) == Enum.sort(Map.keys(EcsPeers.Update.__struct__()))

    # awsvpc tasks report no port of their own: nil (the one configured port applies).
    expected =
      tasks
      |> Enum.map(&{String.to_atom("app@" <> &1["ip"]), ip(&1["ip"]), nil})
      |> Enum.sort()

    # Both are handles, read as the membership process reads them: typed terms, no text.
    assert EcsPeers.Native.dial(u.dial) == {:ok, expected}
    # The same peers, in the same order, as the membership.
    assert EcsPeers.Native.nodes(u.nodes) == {:ok, Enum.map(expected, &elem(&1, 0))}
  end

  test "a bridge-mode peer is dialled at its instance's address and mapped host port; a host-mode one at the container port",
       %{emu: emu, rec: rec} do
    c = "d#{System.unique_integer([:positive])}"

    [bridge_ci, host_ci] =
      Emu.world(emu, "instances", %{
        region: "eu-west-2",
        cluster: c,
        subnet: "10.233.0.0/24",
        instances: [%{ipv4: "10.233.0.10"}, %{ipv4: "10.233.0.11"}]
      })

    run = fn ci, family, mode ->
      Emu.run_tasks(emu, %{
        region: "eu-west-2",
        cluster: c,
        subnet: nil,
        family: family,
        count: 1,
        launch_type: "EC2",
        network_mode: mode,
        container_instance: ci["container_instance"],
        port_mappings: [%{containerPort: 4370}]
      })
    end

    [b1] = run.(bridge_ci, "br", "bridge")
    [b2] = run.(bridge_ci, "br", "bridge")
    [h] = run.(host_ci, "hm", "host")
    start_bridge()

    id = fn t -> t["arn"] |> String.split("/") |> List.last() end
    host_port = fn t -> hd(t["bindings"])["hostPort"] end

    capture_log(fn ->
      start_strategy(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c]])
      for _ <- 1..3, do: assert_receive({:connect, _}, 5_000)
    end)

    # Two tasks share 10.233.0.10, each at its own dynamic host port (not 4370).
    for t <- [b1, b2] do
      assert host_port.(t) != 4370

      assert EcsPeers.Epmd.lookup("app-#{id.(t)}@10.233.0.10") ==
               {:ok, {{10, 233, 0, 10}, host_port.(t)}}
    end

    assert EcsPeers.Epmd.lookup("app-#{id.(h)}@10.233.0.11") == {:ok, {{10, 233, 0, 11}, 4370}}
  end

  test "a node named <basename>-<task id>@<instance ip> names its peers with <basename>",
       %{emu: emu} do
    c = "d#{System.unique_integer([:positive])}"

    world =
      Emu.seed(emu, %{
        ecs: [
          %{
            region: "eu-west-2",
            cluster: c,
            subnet: "10.234.0.0/24",
            tasks: [%{family: "api", count: 1}]
          }
        ]
      })

    [task] = world["ecs"]["eu-west-2/#{c}"]["running"]

    config = [
      endpoint_url: emu.endpoint,
      max_attempts: 1,
      sources: [[type: :ecs, region: "eu-west-2", cluster: c]]
    ]

    # What this node is named, as EcsPeers.this_node/0 passes it (a bridge-mode node carries
    # its task id; a name part without one is the basename as it is); the peers it discovers
    # are named after the basename.
    for {me, basename} <- [
          {:"my_app-4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11@10.0.1.5", "my_app"},
          {:"my_app-54425c54-25ae-4721-9b09-8d635efb5b92@10.0.1.5", "my_app"},
          {:"my-app@10.0.1.5", "my-app"}
        ] do
      {:ok, {validated, _}} = EcsPeers.Native.config(config, {me, nil, true})
      {:ok, :ok} = EcsPeers.Native.discover(validated, self(), 9)
      assert_receive {:ecs_peers, 9, {:discovered, snapshot}}, 10_000
      assert Enum.map(snapshot.peers, & &1.node) == ["#{basename}@#{task["ip"]}"]
    end
  end

  test "a bridge-mode task without a binding for the distribution port is logged as a warning, with the fix",
       %{emu: emu, rec: rec} do
    c = "d#{System.unique_integer([:positive])}"

    [ci] =
      Emu.world(emu, "instances", %{
        region: "eu-west-2",
        cluster: c,
        subnet: "10.234.0.0/24",
        instances: [%{ipv4: "10.234.0.10"}]
      })

    [t] =
      Emu.run_tasks(emu, %{
        region: "eu-west-2",
        cluster: c,
        subnet: nil,
        family: "br",
        count: 1,
        launch_type: "EC2",
        network_mode: "bridge",
        container_instance: ci["container_instance"],
        port_mappings: [%{containerPort: 8080}]
      })

    id = t["arn"] |> String.split("/") |> List.last()

    log =
      capture_log(fn ->
        start_strategy(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c]])
        polls(2)
      end)

    assert log =~ ~r/\[warn(ing)?\].*\[libcluster:ecs\].*1 running task\(s\) skipped/
    assert log =~ "task #{id}"
    assert log =~ "4370"
    assert log =~ "Fix:"
    # Once per change, not once per poll.
    assert length(String.split(log, "skipped")) == 2
  end

  defp polls(n) do
    for _ <- 1..(2 * n), do: assert_receive(:listed, 5_000)
    :ok
  end
end
