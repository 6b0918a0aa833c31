defmodule EcsPeers.SharingTest do
  # Fleet-shared polling with real BEAM nodes: three local peers (OTP's :peer, see
  # EcsPeers.Test.SharingNode; this test VM stays non-distributed), each running
  # EcsPeers.Cluster against the emulator with the same two sources. Not async: the emulator is
  # shared.
  use ExUnit.Case, async: false
  # Needs the AWS emulator: left out of the quick tier (mix test --exclude emulator).
  @moduletag :emulator

  import ExUnit.CaptureLog

  alias EcsPeers.Test.{Emu, SharingNode}

  @interval 1_500
  # How long a fleet may take to converge at start: a follower that missed its poller's first
  # full result (e.g. its own first poll was newer) gets the next one at the latest 8 results
  # later (the core's FULL_EVERY), so twelve intervals, plus the nodes' start.
  @converge 12 * @interval + 10_000

  setup do
    emu = Emu.shared()
    Emu.clear_faults(emu)
    {:ok, emu: emu, id: System.unique_integer([:positive])}
  end

  defp seed(emu, c) do
    world =
      Emu.seed(emu, %{
        ecs: [
          %{
            region: "eu-west-2",
            cluster: c,
            subnet: "10.241.0.0/24",
            tasks: [%{family: "api", count: 2, group: "service:api"}]
          },
          %{
            region: "us-west-2",
            cluster: c,
            subnet: "10.242.0.0/24",
            tasks: [%{family: "api", count: 1, group: "service:api"}]
          }
        ]
      })

    for key <- ["eu-west-2/#{c}", "us-west-2/#{c}"],
        task <- world["ecs"][key]["running"],
        do: "app@" <> task["ip"]
  end

  defp config(emu, c, share) do
    [
      node_basename: "app",
      endpoint_url: emu.endpoint,
      max_attempts: 1,
      polling_interval: @interval,
      jitter: 0.0,
      poll_timeout: 3_000,
      sources: [
        [type: :ecs, region: "eu-west-2", cluster: c, service: "api"],
        [type: :ecs, region: "us-west-2", cluster: c, service: "api"]
      ]
    ] ++ if(share == nil, do: [], else: [share_polling: share])
  end

  # n connected peers, each running EcsPeers.Cluster with `config`; stopped when the test ends.
  defp fleet(ctx, n, config) do
    nodes =
      for i <- 1..n do
        node = SharingNode.start(:"share#{ctx.id}_#{i}", "sharing#{ctx.id}")
        on_exit(fn -> SharingNode.stop(node) end)
        node
      end

    for a <- nodes, b <- nodes, a != b, do: true = SharingNode.call(a, Node, :connect, [b.node])

    for node <- nodes do
      assert {:ok, pid} = SharingNode.call(node, SharingNode, :run, [config])
      Map.put(node, :cluster, pid)
    end
  end

  # A peer's status (through :peer), or a local process's.
  defp status(pid) when is_pid(pid) do
    {:ok, status} = EcsPeers.status(pid)
    status
  end

  defp status(node) do
    {:ok, status} = SharingNode.call(node, EcsPeers, :status, [:share])
    status
  end

  # Waits (polling the statuses, at most `timeout` ms) until `fun.(statuses)` is true; the
  # statuses it was true for, or a failure showing the last ones.
  defp eventually(nodes, timeout, fun) do
    deadline = System.monotonic_time(:millisecond) + timeout
    wait(nodes, deadline, fun)
  end

  defp wait(nodes, deadline, fun) do
    statuses = Enum.map(nodes, &status/1)

    cond do
      fun.(statuses) ->
        statuses

      System.monotonic_time(:millisecond) > deadline ->
        flunk("not reached in time; statuses:\n#{inspect(statuses, pretty: true)}")

      true ->
        receive do
        after
          50 -> wait(nodes, deadline, fun)
        end
    end
  end

  defp names(nodes), do: nodes |> Enum.map(&Atom.to_string(&1.node)) |> Enum.sort()

  # Per source id: the node that polls it, by every node's own account (poller nil = polled
  # here; a follower names the poller and applied the poller's result).
  defp pollers(statuses) do
    for st <- statuses, src <- st.sources, reduce: %{} do
      acc ->
        Map.update(
          acc,
          src.id,
          [{st.node, src.poller, src.received_from}],
          &[{st.node, src.poller, src.received_from} | &1]
        )
    end
  end

  defp one_poller_each?(statuses, expected_sources) do
    by_source = pollers(statuses)

    map_size(by_source) == expected_sources and
      Enum.all?(by_source, fn {_id, views} ->
        polled_here = for {node, nil, nil} <- views, do: node

        match?([_], polled_here) and
          Enum.all?(views, fn {node, poller, from} ->
            node in polled_here or (poller == hd(polled_here) and from == hd(polled_here))
          end)
      end)
  end

  defp poller_of(statuses, id) do
    [node] = for st <- statuses, src <- st.sources, src.id == id, src.poller == nil, do: st.node
    node
  end

  defp calls(statuses),
    do:
      Map.new(for st <- statuses, src <- st.sources, do: {{st.node, src.id}, src.api_calls_total})

  test "three nodes form one group, one node polls each source, the followers' peers are the poller's",
       ctx do
    c = "s#{ctx.id}"
    peers = seed(ctx.emu, c) |> Enum.sort()
    # share_polling left out: sharing is on by default.
    nodes = fleet(ctx, 3, config(ctx.emu, c, nil))
    all = names(nodes)

    statuses =
      eventually(nodes, @converge, fn sts ->
        Enum.all?(sts, &(&1.sharing.members == all and &1.peers == peers)) and
          one_poller_each?(sts, 2)
      end)

    assert Enum.all?(statuses, &(&1.sharing.enabled and &1.sharing.key =~ ~r/^[0-9a-f]{16}$/))

    # AWS calls: over the next polls only each source's poller calls AWS for it.
    before = calls(statuses)
    first = hd(statuses).poll
    later = eventually(nodes, 10 * @interval, fn [st | _] -> st.poll >= first + 4 end)
    after_ = calls(later)

    for st <- later, src <- st.sources do
      made = after_[{st.node, src.id}] - before[{st.node, src.id}]

      if src.poller == nil,
        do: assert(made > 0, "#{st.node} polls #{src.id} but made no call"),
        else:
          assert(
            made == 0,
            "#{st.node} follows #{src.poller} for #{src.id} but made #{made} calls"
          )
    end

    assert Enum.all?(later, &(&1.peers == peers))

    # Every node reported the group of three in telemetry (the sharing event, and the poll's
    # sharing_with measurement).
    for node <- nodes do
      events = SharingNode.call(node, SharingNode, :events, [])
      assert 3 in events.members
      assert 3 in events.sharing_with
    end

    # Results from a node that is not a member of the group (yet) are held, not handed to the
    # core, and at most 32 of them: the 33rd drops the oldest (counted).
    [target | _] = nodes
    group = {:ecs_peers, :share, hd(later).sharing.key, :erlang.phash2(:"sharing#{ctx.id}")}

    for i <- 1..33 do
      msg = {:ecs_peers_shared, group, :"ghost@127.0.0.1", "result #{i}"}
      SharingNode.call(target, :erlang, :send, [target.cluster, msg])
    end

    eventually([target], 5_000, fn [st] -> st.sharing.dropped == 1 end)

    # The watchdog restarts a follower's poller: the new poller is told the members again, so
    # the follower goes on following (without that it would poll every source itself).
    [fst | _] = for st <- later, Enum.all?(st.sources, &(&1.poller != nil)), do: st
    follower = Enum.find(nodes, &(Atom.to_string(&1.node) == fst.node))
    :ok = SharingNode.call(follower, SharingNode, :stall, [follower.cluster])
    eventually([follower], 10 * @interval, fn [st] -> st.poll < fst.poll end)

    # Its new poller polled on its own before it was told the members, so the poller's results
    # may be older than its own last one (dropped, but they keep it following) or "same as" a
    # result it never had: it applies the poller's next full one, sent at least every 8 results.
    eventually(nodes, 14 * @interval, fn sts ->
      [st] = for st <- sts, st.node == fst.node, do: st
      one_poller_each?(sts, 2) and Enum.all?(st.sources, &(&1.received_from != nil))
    end)
  end

  test "the poller node killed: another node polls its sources within two intervals, nobody's peers empty",
       ctx do
    c = "s#{ctx.id}"
    peers = seed(ctx.emu, c) |> Enum.sort()
    nodes = fleet(ctx, 3, config(ctx.emu, c, true))
    all = names(nodes)

    statuses =
      eventually(nodes, @converge, fn sts ->
        Enum.all?(sts, &(&1.sharing.members == all and &1.peers == peers)) and
          one_poller_each?(sts, 2)
      end)

    id = hd(hd(statuses).sources).id
    victim_name = poller_of(statuses, id)
    {[victim], rest} = Enum.split_with(nodes, &(Atom.to_string(&1.node) == victim_name))
    for node <- rest, do: SharingNode.call(node, SharingNode, :reset, [])

    killed_at = System.monotonic_time(:millisecond)
    SharingNode.kill(victim)

    # Within two intervals of the kill, a survivor polls the source itself (its latest round
    # called AWS for it), and the group has shrunk to the survivors.
    polled =
      eventually(rest, 2 * @interval, fn sts ->
        Enum.all?(sts, &(&1.sharing.members == names(rest))) and
          Enum.any?(sts, fn st ->
            Enum.any?(st.sources, &(&1.id == id and &1.poller == nil and &1.api_calls > 0))
          end)
      end)

    took = System.monotonic_time(:millisecond) - killed_at

    # Then every survivor agrees again: one poller per source, the other following it.
    after_kill = eventually(rest, 10 * @interval, &one_poller_each?(&1, 2))
    assert poller_of(after_kill, id) == poller_of(polled, id)

    IO.puts(
      "\n[sharing] #{id}: polled by #{poller_of(polled, id)} #{took} ms after its poller " <>
        "was killed (polling_interval #{@interval} ms)"
    )

    # Two more rounds, then: no survivor ever published an update with fewer peers.
    first = hd(after_kill).poll
    final = eventually(rest, 10 * @interval, fn [st | _] -> st.poll >= first + 2 end)
    assert Enum.all?(final, &(&1.peers == peers))

    for node <- rest do
      %{poll: counts} = SharingNode.call(node, SharingNode, :events, [])
      assert counts != [] and Enum.min(counts) == length(peers)
    end
  end

  test "sharing off: every node polls every source itself, and joins no group", ctx do
    c = "s#{ctx.id}"
    peers = seed(ctx.emu, c) |> Enum.sort()
    nodes = fleet(ctx, 2, config(ctx.emu, c, false))

    statuses =
      eventually(nodes, @converge, fn sts ->
        Enum.all?(sts, fn st ->
          st.peers == peers and
            Enum.all?(st.sources, &(&1.api_calls_total > 0 and &1.poller == nil))
        end)
      end)

    for st <- statuses do
      assert st.sharing.members == []
      refute st.sharing.enabled
      assert Enum.all?(st.sources, &(&1.received_from == nil))
    end
  end

  defp child(:child, config), do: {EcsPeers.Cluster, config ++ [name: :lonely]}

  defp child(:strategy, config) do
    {EcsPeers.Strategy,
     [
       %Cluster.Strategy.State{
         topology: :lonely,
         config: config,
         connect: {SharingNode, :linked, []},
         disconnect: {SharingNode, :linked, []},
         list_nodes: {SharingNode, :none, []}
       }
     ]}
  end

  # share_polling given true: a warning that it cannot share; left out (on by default): not a
  # word at info or above, since every mix test and iex without --name is such a node.
  for kind <- [:child, :strategy], share <- [true, nil] do
    test "#{kind}: a node that is not distributed never joins a group (share_polling: #{inspect(share)})",
         ctx do
      c = "s#{ctx.id}"
      peers = seed(ctx.emu, c) |> Enum.sort()
      refute Node.alive?()

      log =
        capture_log([level: :info], fn ->
          pid = start_supervised!(child(unquote(kind), config(ctx.emu, c, unquote(share))))
          [st] = eventually([pid], 15_000, fn [st] -> st.peers == peers end)
          assert {:ok, %{topology: :lonely}} = EcsPeers.status(:lonely)
          assert %{enabled: false, members: [], dropped: 0} = st.sharing
          assert Enum.all?(st.sources, &(&1.poller == nil and &1.received_from == nil))
          assert Enum.all?(st.sources, &(&1.api_calls_total > 0))
        end)

      if unquote(share) do
        assert log =~ "[warning]"
        assert log =~ "share_polling is on but this node is not distributed"
      else
        refute log =~ "share_polling", log
      end
    end
  end

  test "a sharing scope that dies is restarted by the application; its member joins again",
       ctx do
    c = "s#{ctx.id}"
    seed(ctx.emu, c)
    nodes = fleet(ctx, 2, config(ctx.emu, c, true))
    all = names(nodes)
    eventually(nodes, @converge, fn sts -> Enum.all?(sts, &(&1.sharing.members == all)) end)

    [first | _] = nodes
    true = SharingNode.call(first, SharingNode, :reset, [])
    scope = SharingNode.call(first, Process, :whereis, [EcsPeers.Sharing])
    true = SharingNode.call(first, Process, :exit, [scope, :kill])

    # The node saw its group go (members 0 in telemetry); its supervisor starts the scope
    # again, the membership process joins again (members 2), and both nodes see both.
    eventually(nodes, @converge, fn sts ->
      members = SharingNode.call(first, SharingNode, :events, []).members

      0 in members and List.last(members) == 2 and
        SharingNode.call(first, Process, :whereis, [EcsPeers.Sharing]) not in [nil, scope] and
        Enum.all?(sts, &(&1.sharing.members == all))
    end)
  end

  test "status/1 by topology; a result for another group is dropped and counted", ctx do
    c = "s#{ctx.id}"
    seed(ctx.emu, c)

    capture_log(fn ->
      pid = start_supervised!({EcsPeers.Cluster, config(ctx.emu, c, nil) ++ [name: :solo]})
      assert {:ok, %{topology: :solo, sharing: %{dropped: 0}}} = EcsPeers.status(:solo)
      assert {:error, "no EcsPeers.Strategy or EcsPeers.Cluster" <> _} = EcsPeers.status(:nope)

      send(pid, {:ecs_peers_shared, {:ecs_peers, :other, "0", 1}, :"x@10.0.0.1", "result"})
      send(pid, {:ecs_peers_shared, :garbage, "not an atom", 42})
      # status/1 reads what the process published, not its mailbox: a call it answers after
      # the two messages (mailboxes are ordered) makes sure it has handled them.
      _ = :sys.get_state(pid)
      assert {:ok, %{sharing: %{dropped: 2}}} = EcsPeers.status(pid)
      assert Process.alive?(pid)
    end)
  end
end
