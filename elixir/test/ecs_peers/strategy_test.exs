defmodule EcsPeers.StrategyTest do
  # Not async: fault injection in the shared emulator is global (each test still uses its own
  # clusters and regions).
  use ExUnit.Case, async: false
  # Needs the AWS emulator: left out of the quick tier (mix test --exclude emulator).
  @moduletag :emulator

  import ExUnit.CaptureLog

  alias Cluster.Strategy.State
  alias EcsPeers.Test.{Emu, Recorder}

  setup do
    emu = Emu.shared()
    Emu.clear_faults(emu)
    on_exit(fn -> Emu.clear_faults(emu) end)
    {:ok, emu: emu, rec: Recorder.start(self())}
  end

  defp cluster_name, do: "c#{System.unique_integer([:positive])}"

  defp seed(emu, region, cluster, subnet, n) do
    world =
      Emu.seed(emu, %{
        ecs: [
          %{
            region: region,
            cluster: cluster,
            subnet: subnet,
            tasks: [%{family: "api", count: n, group: "service:api"}]
          }
        ]
      })

    world["ecs"]["#{region}/#{cluster}"]["running"]
  end

  defp start(emu, rec, sources, extra \\ []) do
    config =
      [
        node_basename: "app",
        endpoint_url: emu.endpoint,
        max_attempts: 1,
        polling_interval: 200,
        jitter: 0.0,
        poll_timeout: 3_000,
        sources: sources
      ] ++
        extra

    state = %State{
      topology: :ecs,
      config: config,
      connect: {Recorder, :connect, [rec, true]},
      disconnect: {Recorder, :disconnect, [rec]},
      list_nodes: {Recorder, :list_nodes, [rec]}
    }

    start_supervised!({EcsPeers.Strategy, [state]})
  end

  # The strategy's links are libcluster's State (EcsPeers.Membership serves the strategy).
  defp replace_connect(pid, mfa) do
    :sys.replace_state(pid, fn %{links: {mod, state}} = s ->
      %{s | links: {mod, %{state | connect: mfa}}}
    end)
  end

  defp node_of(task), do: String.to_atom("app@" <> task["ip"])

  # Waits for n polls. Every poll reconciles through disconnect_nodes/4 and then connect_nodes/4,
  # and each of them lists the connected nodes once (as libcluster's do): two listings a poll.
  defp polls(n) do
    for _ <- 1..(2 * n), do: assert_receive(:listed, 5_000)
    :ok
  end

  test "connects every running task of every region", %{emu: emu, rec: rec} do
    c = cluster_name()
    eu = seed(emu, "eu-west-2", c, "10.211.0.0/24", 2)
    us = seed(emu, "us-west-2", c, "10.212.0.0/24", 1)

    capture_log(fn ->
      start(emu, rec, [
        [type: :ecs, region: "eu-west-2", cluster: c, service: "api"],
        [type: :ecs, region: "us-west-2", cluster: c, service: "api"]
      ])

      for _ <- eu ++ us, do: assert_receive({:connect, _}, 5_000)
    end)

    connected = Agent.get(rec.agent, & &1)
    assert connected == MapSet.new(Enum.map(eu ++ us, &node_of/1))
  end

  test "a stopped task is disconnected, a new task is connected", %{emu: emu, rec: rec} do
    c = cluster_name()
    [a, b] = seed(emu, "eu-west-2", c, "10.213.0.0/24", 2)

    capture_log(fn ->
      start(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c, service: "api"]])
      assert_receive {:connect, n1}, 5_000
      assert_receive {:connect, n2}, 5_000
      assert MapSet.new([n1, n2]) == MapSet.new([node_of(a), node_of(b)])

      Emu.stop_tasks(emu, "eu-west-2", c, [b["arn"]])
      gone = node_of(b)
      assert_receive {:disconnect, ^gone}, 5_000

      [new] =
        Emu.run_tasks(emu, %{
          region: "eu-west-2",
          cluster: c,
          subnet: "10.213.0.0/24",
          family: "api",
          count: 1,
          group: "service:api"
        })

      joined = node_of(new)
      assert_receive {:connect, ^joined}, 5_000
      refute_received {:disconnect, _}
    end)
  end

  test "nobody is disconnected while AWS fails, and the failure is logged with its fix", %{
    emu: emu,
    rec: rec
  } do
    c = cluster_name()
    tasks = seed(emu, "ap-south-1", c, "10.214.0.0/24", 3)

    log =
      capture_log(fn ->
        start(emu, rec, [[type: :ecs, region: "ap-south-1", cluster: c, service: "api"]])
        for _ <- tasks, do: assert_receive({:connect, _}, 5_000)

        Emu.fault(emu, %{
          operation: "*",
          region: "ap-south-1",
          count: 1_000,
          status: 500,
          code: "ServerException",
          message: "injected"
        })

        polls(4)
        Emu.clear_faults(emu)

        Emu.fault(emu, %{
          operation: "ListTasks",
          region: "ap-south-1",
          count: 1_000,
          status: 400,
          code: "AccessDeniedException",
          message: "User: x is not authorized to perform: ecs:ListTasks"
        })

        polls(4)
        Emu.clear_faults(emu)
        polls(2)
      end)

    refute_received {:disconnect, _}
    assert Agent.get(rec.agent, &MapSet.size/1) == 3

    assert log =~
             "[libcluster:ecs] source ecs:ap-south-1/#{c}/api is failing (keeping its 3 last-known peers)"

    assert log =~ "ServerException: injected"
    assert log =~ "Fix: grant ecs:ListTasks to the task role"
    assert log =~ "[libcluster:ecs] source ecs:ap-south-1/#{c}/api recovered (3 peers)"
  end

  test "a node that does not answer is retried every poll; the strategy survives", %{
    emu: emu,
    rec: rec
  } do
    c = cluster_name()
    [t] = seed(emu, "eu-west-2", c, "10.215.0.0/24", 1)
    node = node_of(t)

    capture_log(fn ->
      pid = start(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c, service: "api"]])

      replace_connect(pid, {Recorder, :connect, [rec, false]})

      for _ <- 1..3, do: assert_receive({:connect, ^node}, 5_000)
      assert Process.alive?(pid)
    end)
  end

  # Waits (at most 20 s) for `fun` to return a truthy value; returns it.
  defp eventually(fun, deadline \\ System.monotonic_time(:millisecond) + 20_000) do
    case fun.() do
      value when value not in [nil, false] ->
        value

      _ ->
        if System.monotonic_time(:millisecond) > deadline, do: flunk("not reached within 20 s")

        receive do
        after
          50 -> eventually(fun, deadline)
        end
    end
  end

  test "a peer unconnected for more than two polls is diagnosed once, with its fix, and status/1 shows it",
       %{emu: emu, rec: rec} do
    c = cluster_name()
    [t] = seed(emu, "eu-west-2", c, "10.216.0.0/24", 1)
    node = node_of(t)
    name = Atom.to_string(node)

    log =
      capture_log(fn ->
        pid = start(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c, service: "api"]])
        replace_connect(pid, {Recorder, :connect, [rec, false]})

        # Nothing answers at 10.216.0.x: whichever way the network says so (no route, or
        # dropped), the doctor's checks diagnose it.
        {st, gap} =
          eventually(fn ->
            {:ok, st} = EcsPeers.status(pid)
            gap = Enum.find(st.unreachable, &(&1.node == name and &1.code != nil))
            gap && {st, gap}
          end)

        assert st.expected == [name] and st.connected == [], inspect(st)
        assert gap.polls > 2 and is_binary(gap.reason) and is_binary(gap.fix), inspect(gap)
        assert {:ok, _, _} = DateTime.from_iso8601(gap.since)
        # Three more polls: checked again at least once, and not said again.
        {:ok, %{poll: at}} = EcsPeers.status(pid)
        eventually(fn -> match?({:ok, %{poll: p}} when p >= at + 4, EcsPeers.status(pid)) end)
      end)

    said =
      for l <- String.split(log, "\n"), l =~ "cannot connect to #{name} (eu-west-2) since ", do: l

    assert [line] = said, log
    assert line =~ ~r/\(\d+ polls\): \[\w+\] .+\. Fix: .+/
  end

  test "status/1 answers while a connect blocks the strategy", %{emu: emu, rec: rec} do
    c = cluster_name()
    [a] = seed(emu, "eu-west-2", c, "10.217.0.0/24", 1)

    capture_log(fn ->
      pid = start(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c, service: "api"]])
      first = node_of(a)
      assert_receive {:connect, ^first}, 5_000
      # Longer than status/1's 5 s: a status served by the blocked process would time out.
      replace_connect(pid, {Recorder, :slow_connect, [rec, 8_000]})

      [b] =
        Emu.run_tasks(emu, %{
          region: "eu-west-2",
          cluster: c,
          subnet: "10.217.0.0/24",
          family: "api",
          count: 1,
          group: "service:api"
        })

      second = node_of(b)
      assert_receive {:connect, ^second}, 5_000
      assert {:ok, st} = EcsPeers.status(pid)
      assert st.connected == [Atom.to_string(first)]
    end)
  end

  test "a connect function that breaks libcluster's contract is logged, not fatal", %{
    emu: emu,
    rec: rec
  } do
    c = cluster_name()
    seed(emu, "eu-west-2", c, "10.216.0.0/24", 1)

    log =
      capture_log(fn ->
        pid = start(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c]])

        replace_connect(pid, {Recorder, :raising_connect, []})

        polls(3)
        assert Process.alive?(pid)
      end)

    assert log =~ "connect/disconnect failed"
  end

  test "stray and stale messages are ignored", %{emu: emu, rec: rec} do
    c = cluster_name()
    seed(emu, "eu-west-2", c, "10.217.0.0/24", 1)

    capture_log(fn ->
      pid = start(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c]])
      assert_receive {:connect, _}, 5_000
      send(pid, :hello)
      send(pid, {:ecs_peers, -1, {:update, %{peers: [], sources: []}}})
      polls(2)
      assert Process.alive?(pid)
      refute_received {:disconnect, _}
    end)
  end

  test "this node is never connected to itself, and stops connecting when its task leaves", %{
    emu: emu,
    rec: rec
  } do
    c = cluster_name()
    [me, other] = seed(emu, "eu-west-2", c, "10.218.0.0/24", 2)
    me_node = "app@" <> me["ip"]
    other_node = node_of(other)

    log =
      capture_log(fn ->
        start(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c]], local_node: me_node)
        assert_receive {:connect, ^other_node}, 5_000
        Emu.stop_tasks(emu, "eu-west-2", c, [me["arn"]])
        assert_receive {:disconnect, ^other_node}, 5_000
        polls(3)
      end)

    refute_received {:connect, _}
    assert log =~ "this node's task has left ecs:eu-west-2/#{c}"
  end

  test "EcsPeers.discover/1 polls once for scripts and consoles", %{emu: emu} do
    c = cluster_name()
    tasks = seed(emu, "eu-west-2", c, "10.219.0.0/24", 2)

    assert {:ok, update} =
             EcsPeers.discover(
               node_basename: "app",
               endpoint_url: emu.endpoint,
               max_attempts: 1,
               sources: [[type: :ecs, region: "eu-west-2", cluster: c]]
             )

    assert Enum.map(update.peers, & &1.ip) == Enum.map(tasks, & &1["ip"])
    assert [%{ok: true, api_calls: 2, kind: "ecs"}] = update.sources

    assert %{"ecs:ListTasks" => 1, "ecs:DescribeTasks" => 1} =
             hd(update.sources).api_calls_by_action

    assert is_binary(hd(update.peers).node)

    assert {:error, "sources: is empty" <> _} =
             EcsPeers.discover(node_basename: "app", sources: [])
  end

  test "EcsPeers.discover/1 works from a console that is not distributed", %{emu: emu} do
    # mix test runs as nonode@nohost, like a plain `iex -S mix`: the peers are named after the
    # release this project would build (its app), as the core's rule says.
    assert node() == :nonode@nohost
    c = cluster_name()
    tasks = seed(emu, "eu-west-2", c, "10.225.0.0/24", 2)

    assert {:ok, update} =
             EcsPeers.discover(
               endpoint_url: emu.endpoint,
               max_attempts: 1,
               sources: [[type: :ecs, region: "eu-west-2", cluster: c]]
             )

    assert Enum.map(update.peers, & &1.node) == Enum.map(tasks, &"ecs_peers@#{&1["ip"]}")
    assert update.local == nil
  end

  # Collects what a subscriber has received so far: the newest update alone, and every change
  # of every update.
  defp drain(tag, acc \\ %{last: nil, added: [], events: []}) do
    receive do
      {:ecs_peers, ^tag, {:update, u}} ->
        drain(tag, %{
          last: u,
          added: acc.added ++ Enum.map(u.added, & &1.node),
          events: acc.events ++ u.events
        })
    after
      0 -> acc
    end
  end

  # Starts a poller for `pid` with `config`, validated once; both pollers of a test may share
  # the validated config.
  defp start_poller(validated, pid, tag) do
    {:ok, poller} = EcsPeers.Native.start(validated, pid, tag)
    poller
  end

  test "a receiver that skips updates still gets self-contained ones, with the same fingerprint",
       %{emu: emu} do
    c = cluster_name()
    [a, b] = seed(emu, "eu-west-2", c, "10.226.0.0/24", 2)

    config = [
      node_basename: "app",
      endpoint_url: emu.endpoint,
      max_attempts: 1,
      polling_interval: 100,
      sources: [[type: :ecs, region: "eu-west-2", cluster: c]]
    ]

    me = self()

    # The slow receiver reads nothing until told, so every update queues in its mailbox.
    slow =
      spawn_link(fn ->
        receive do
          :read -> send(me, {:slow, drain(2)})
        end
      end)

    # One validation, two pollers: this process's (read at once) and the slow one's.
    {:ok, {validated, _}} = EcsPeers.configure(config)
    fast = start_poller(validated, self(), 1)
    slow_poller = start_poller(validated, slow, 2)

    names = fn u ->
      {:ok, nodes} = EcsPeers.Native.nodes(u.nodes)
      nodes |> Enum.map(&Atom.to_string/1) |> Enum.sort()
    end

    two = Enum.sort(["app@" <> a["ip"], "app@" <> b["ip"]])
    assert_receive {:ecs_peers, 1, {:update, %{poll: 1} = first}}, 5_000
    assert names.(first) == two

    [new] =
      Emu.run_tasks(emu, %{
        region: "eu-west-2",
        cluster: c,
        subnet: "10.226.0.0/24",
        family: "api",
        count: 1
      })

    three = Enum.sort(two ++ ["app@" <> new["ip"]])

    wait = fn wait ->
      receive do
        {:ecs_peers, 1, {:update, u}} -> if names.(u) == three, do: u, else: wait.(wait)
      after
        5_000 -> flunk("the fast receiver never saw the new task")
      end
    end

    seen = wait.(wait)
    # Several more polls, none of them changing the membership.
    for _ <- 1..3, do: assert_receive({:ecs_peers, 1, {:update, _}}, 5_000)

    send(slow, :read)
    assert_receive {:slow, got}, 5_000
    # Taking only the newest of its queued updates, the slow one has the whole membership,
    # and the same fingerprint as the fast one.
    assert names.(got.last) == three
    assert got.last.membership == seen.membership
    # And the changes it was sent add up to the same peers.
    assert Enum.sort(got.added) == three
    EcsPeers.Native.stop(fast)
    EcsPeers.Native.stop(slow_poller)
  end

  test "the poller stops when its owner exits (the resource is dropped)", %{emu: emu} do
    c = cluster_name()
    seed(emu, "ca-central-1", c, "10.220.0.0/24", 1)
    # A pass-through fault entry counts every ListTasks call to this region.
    Emu.fault(emu, %{operation: "ListTasks", region: "ca-central-1", count: 1_000_000})

    config = [
      node_basename: "app",
      endpoint_url: emu.endpoint,
      max_attempts: 1,
      polling_interval: 100,
      sources: [[type: :ecs, region: "ca-central-1", cluster: c]]
    ]

    {:ok, {validated, _}} = EcsPeers.configure(config)

    owner =
      spawn(fn ->
        {:ok, _poller} = EcsPeers.Native.start(validated, self(), 1)
        receive do: (:exit -> :ok)
      end)

    calls = fn -> hd(Emu.faults(emu))["hits"] end

    wait = fn f, n ->
      if calls.() >= n,
        do: :ok,
        else:
          (
            Process.sleep(50)
            f.(f, n)
          )
    end

    wait.(wait, 3)
    send(owner, :exit)
    # The resource is freed with the owner's heap; give an in-flight poll time to finish.
    Process.sleep(500)
    after_exit = calls.()
    Process.sleep(1_000)
    assert calls.() == after_exit, "the poller kept polling after its owner exited"
  end

  test "a region without the cluster is absent in the poll telemetry, not failing", %{
    emu: emu,
    rec: rec
  } do
    c = cluster_name()
    seed(emu, "sa-east-1", c, "10.222.0.0/24", 1)
    me = self()

    :telemetry.attach(
      "t-absent",
      [:ecs_peers, :poll, :stop],
      fn e, m, meta, _ -> send(me, {e, m, meta}) end,
      nil
    )

    on_exit(fn -> :telemetry.detach("t-absent") end)

    capture_log(fn ->
      start(emu, rec, [[type: :ecs, region: "sa-east-1", cluster: c, regions: ["me-central-1"]]])

      assert_receive {[:ecs_peers, :poll, :stop],
                      %{peers: 1, failing_sources: 0, skipping_sources: 0, absent_sources: 1},
                      %{sources: sources}},
                     5_000

      assert [%{region: "me-central-1", state: "absent", ok: true, absent: why}] =
               Enum.filter(sources, &(&1.region == "me-central-1"))

      assert why == "the cluster does not exist in me-central-1"
      refute_receive {[:ecs_peers, :source, :error], _, _}, 100
    end)
  end

  test "a tags filter no running task matches is a skipping source in telemetry and status", %{
    emu: emu,
    rec: rec
  } do
    c = cluster_name()
    seed(emu, "sa-east-1", c, "10.223.0.0/24", 2)
    me = self()

    :telemetry.attach(
      "t-skipping",
      [:ecs_peers, :poll, :stop],
      fn e, m, meta, _ -> send(me, {e, m, meta}) end,
      nil
    )

    on_exit(fn -> :telemetry.detach("t-skipping") end)

    capture_log(fn ->
      start(emu, rec, [
        [type: :ecs, region: "sa-east-1", cluster: c, tags: %{"team" => "payments"}]
      ])

      assert_receive {[:ecs_peers, :poll, :stop],
                      %{peers: 0, failing_sources: 0, skipping_sources: 1, absent_sources: 0},
                      %{sources: [src]}},
                     5_000

      assert %{state: "skipping", ok: false, skipped_tasks: 2} = src
      assert [%{reason: "tag_mismatch", tasks: 2, message: message}] = src.skipped
      assert message =~ ~s|"team"="payments" wanted; they carry no "team" tag (2)|

      # status/1 reads the same state once the membership process has kept the update.
      eventually(fn ->
        match?({:ok, %{sources: [%{state: "skipping", ok: false}]}}, EcsPeers.status(:ecs))
      end)
    end)
  end

  test "emits poll and source-error telemetry", %{emu: emu, rec: rec} do
    c = cluster_name()
    seed(emu, "sa-east-1", c, "10.221.0.0/24", 2)
    me = self()

    :telemetry.attach(
      "t-poll",
      [:ecs_peers, :poll, :stop],
      fn e, m, meta, _ -> send(me, {e, m, meta}) end,
      nil
    )

    :telemetry.attach(
      "t-err",
      [:ecs_peers, :source, :error],
      fn e, m, meta, _ -> send(me, {e, m, meta}) end,
      nil
    )

    on_exit(fn ->
      :telemetry.detach("t-poll")
      :telemetry.detach("t-err")
    end)

    capture_log(fn ->
      start(emu, rec, [[type: :ecs, region: "sa-east-1", cluster: c]])

      assert_receive {[:ecs_peers, :poll, :stop],
                      %{
                        peers: 2,
                        added: 2,
                        api_calls: 2,
                        failing_sources: 0,
                        absent_sources: 0,
                        duration: d
                      }, %{topology: :ecs}},
                     5_000

      assert is_integer(d) and d >= 0

      Emu.fault(emu, %{
        operation: "ListTasks",
        region: "sa-east-1",
        count: 1_000,
        status: 400,
        code: "AccessDeniedException",
        message: "no"
      })

      assert_receive {[:ecs_peers, :source, :error], %{consecutive_failures: n},
                      %{source: "ecs:sa-east-1/" <> _, kind: "access_denied"}},
                     5_000

      assert n >= 1
    end)
  end

  # Serves a task metadata v4 /task document on loopback, as the ECS agent does.
  defp serve_metadata(doc) do
    {:ok, listen} =
      :gen_tcp.listen(0, [:binary, ip: {127, 0, 0, 1}, active: false, reuseaddr: true])

    {:ok, port} = :inet.port(listen)

    serve = fn serve ->
      with {:ok, sock} <- :gen_tcp.accept(listen) do
        {:ok, _request} = :gen_tcp.recv(sock, 0, 2_000)

        :gen_tcp.send(
          sock,
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: #{byte_size(doc)}\r\n\r\n#{doc}"
        )

        :gen_tcp.close(sock)
        serve.(serve)
      end
    end

    pid = spawn(fn -> serve.(serve) end)
    :ok = :gen_tcp.controlling_process(listen, pid)
    on_exit(fn -> Process.exit(pid, :kill) end)
    "http://127.0.0.1:#{port}/v4/t1"
  end

  test "cluster: :auto polls this task's own cluster and never connects to this task", %{
    emu: emu,
    rec: rec
  } do
    c = cluster_name()
    [me, a, b] = seed(emu, "eu-west-2", c, "10.222.0.0/24", 3)
    [prefix, _] = String.split(me["arn"], ":task/")

    doc =
      Emu.json(%{
        "Cluster" => "#{prefix}:cluster/#{c}",
        "TaskARN" => me["arn"],
        "Family" => "api",
        "AvailabilityZone" => "eu-west-2a",
        "LaunchType" => "FARGATE",
        "Containers" => [
          %{
            "Name" => "app",
            "Networks" => [%{"NetworkMode" => "awsvpc", "IPv4Addresses" => [me["ip"]]}]
          }
        ]
      })

    url = serve_metadata(doc)

    capture_log(fn ->
      start(emu, rec, [[type: :ecs, cluster: :auto]], metadata_url: url)
      assert_receive {:connect, n1}, 5_000
      assert_receive {:connect, n2}, 5_000
      assert MapSet.new([n1, n2]) == MapSet.new([node_of(a), node_of(b)])
      polls(2)
    end)

    me_node = node_of(me)
    refute_received {:connect, ^me_node}
  end

  test "atoms are made only for the node names handed to connect_nodes/4", %{emu: emu, rec: rec} do
    c = cluster_name()
    seed(emu, "eu-west-2", c, "10.223.0.0/24", 3)

    config = [
      node_basename: "app",
      endpoint_url: emu.endpoint,
      max_attempts: 1,
      sources: [[type: :ecs, region: "eu-west-2", cluster: c]]
    ]

    # discover/1 returns node names as binaries: no atom per peer (warm up the field names first).
    {:ok, _} = EcsPeers.discover(config)
    before = :erlang.system_info(:atom_count)
    {:ok, %{peers: [_, _, _]}} = EcsPeers.discover(config)
    assert :erlang.system_info(:atom_count) == before

    # Warm up the strategy's own code path (module loading makes atoms of its own) with a
    # one-task cluster, so that what is counted below is what polling and connecting make.
    warm = cluster_name()
    seed(emu, "eu-west-2", warm, "10.224.0.0/24", 1)

    capture_log(fn ->
      start(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: warm]])
      assert_receive {:connect, _}, 5_000
      polls(2)
      stop_supervised!(EcsPeers.Strategy)

      before = :erlang.system_info(:atom_count)
      start(emu, rec, [[type: :ecs, region: "eu-west-2", cluster: c]])
      for _ <- 1..3, do: assert_receive({:connect, _}, 5_000)
      polls(2)
      made = :erlang.system_info(:atom_count) - before

      assert made == 3, "one atom per connected node (3) and nothing else, but #{made} were made"
    end)
  end
end
