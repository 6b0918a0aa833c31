defmodule EcsPeers.Membership.RulesTest do
  # The membership decisions as plain functions: no emulator, no NIF, no process.
  use ExUnit.Case, async: true

  alias EcsPeers.Membership.Rules

  defp set(list), do: MapSet.new(list)
  defp peers(names), do: Enum.map(names, &%{node: &1})

  defp update(added, removed, draining),
    do: %{added: peers(added), removed: peers(removed), draining: peers(draining)}

  describe "left_change/2: this node's own task" do
    test "leaves when the core says its task has left, rejoins when a source lists it again" do
      assert Rules.left_change(false, "ecs:eu-west-2/web/api") == :leave
      assert Rules.left_change(true, nil) == :rejoin
    end

    test "nothing changes while it stays in or stays out" do
      assert Rules.left_change(false, nil) == :stay
      assert Rules.left_change(true, "ecs:eu-west-2/web/api") == :stay
    end
  end

  describe "targets/3: keep and join" do
    test "every member is kept and joined when nothing drains" do
      members = set([:"app@10.0.0.1", :"app@10.0.0.2"])
      assert Rules.targets(members, set([]), false) == {members, members}
    end

    test "a draining peer is kept but never joined anew" do
      members = set([:"app@10.0.0.1", :"app@10.0.0.2"])

      assert Rules.targets(members, set(["app@10.0.0.2"]), false) ==
               {members, set([:"app@10.0.0.1"])}
    end

    test "a node that has left keeps and joins nobody" do
      members = set([:"app@10.0.0.1"])
      assert Rules.targets(members, set([]), true) == {set([]), set([])}
    end
  end

  describe "reconcile/3 and the links' answers" do
    test "disconnects only the connected nodes no longer kept" do
      connected = set([:a@h, :b@h, :c@h])
      keep = set([:a@h, :b@h, :d@h])
      join = set([:a@h, :d@h])

      assert Rules.reconcile(connected, keep, join) == {[:c@h], set([:a@h, :b@h, :d@h])}
    end

    test "a draining peer still connected stays connected; one not connected is not joined" do
      members = set([:a@h, :b@h])
      {keep, join} = Rules.targets(members, set(["b@h"]), false)

      assert Rules.reconcile(set([:a@h, :b@h]), keep, join) == {[], set([:a@h, :b@h])}
      assert Rules.reconcile(set([:a@h]), keep, join) == {[], set([:a@h])}
    end

    test "leaving disconnects everyone" do
      {keep, join} = Rules.targets(set([:a@h, :b@h]), set([]), true)
      assert Rules.reconcile(set([:a@h, :b@h]), keep, join) == {[:a@h, :b@h], set([])}
    end

    test "a failed disconnect stays connected, a failed connect does not" do
      assert Rules.disconnect_failed(set([:a@h]), [{:c@h, :timeout}]) == set([:a@h, :c@h])
      assert Rules.connect_failed(set([:a@h, :d@h]), [{:d@h, false}]) == set([:a@h])
    end
  end

  describe "draining/2" do
    test "the core's draining peers are added, and stay until removed or listed anew" do
      held = Rules.draining(set([]), update([], [], ["a@h", "b@h"]))
      assert held == set(["a@h", "b@h"])
      assert Rules.draining(held, update([], [], [])) == held
      assert Rules.draining(held, update([], ["a@h"], [])) == set(["b@h"])
      assert Rules.draining(held, update(["b@h"], [], [])) == set(["a@h"])
    end

    test "nothing draining stays nothing" do
      assert Rules.draining(set([]), update(["a@h"], ["b@h"], [])) == set([])
    end
  end

  describe "the watchdog and terminate" do
    test "a poller is silent after three intervals plus a timeout, and never before 10 s" do
      settings = %{polling_interval: 5_000, poll_timeout: 20_000}
      refute Rules.silent?(35_000, settings)
      assert Rules.silent?(35_001, settings)

      fast = %{polling_interval: 100, poll_timeout: 1_000}
      refute Rules.silent?(9_999, fast)
      assert Rules.silent?(10_001, fast)
    end

    test "only a shutdown while the VM stops leaves, and only when connected and not left yet" do
      one = set([:a@h])
      assert Rules.leave_on_terminate?(:shutdown, true, false, one)
      assert Rules.leave_on_terminate?({:shutdown, :normal}, true, false, one)
      refute Rules.leave_on_terminate?(:shutdown, false, false, one)
      refute Rules.leave_on_terminate?(:killed, true, false, one)
      refute Rules.leave_on_terminate?(:shutdown, true, true, one)
      refute Rules.leave_on_terminate?(:shutdown, true, false, set([]))
    end
  end

  describe "gaps: peers this node cannot connect to, and their diagnoses" do
    defp gap_at(poll, extra \\ %{}),
      do:
        Map.merge(
          %{since: 1_000, first_poll: poll, checking: nil, checked_at: nil, diagnosis: nil},
          extra
        )

    test "an expected peer not connected after an update has a gap from that update on" do
      {gaps, []} = Rules.gaps(%{}, set([:a@h, :b@h]), set([:a@h]), 1_000, 7)
      assert gaps == %{b@h: gap_at(7)}
      # The next update keeps the gap as it was: since the first one.
      assert {^gaps, []} = Rules.gaps(gaps, set([:a@h, :b@h]), set([:a@h]), 2_000, 8)
    end

    test "a connected peer, or one discovery no longer lists, has no gap" do
      gaps = %{a@h: gap_at(1), b@h: gap_at(1)}
      assert {%{}, []} = Rules.gaps(gaps, set([:a@h, :b@h]), set([:a@h, :b@h]), 2_000, 2)
      assert {%{}, []} = Rules.gaps(gaps, set([]), set([]), 2_000, 2)
    end

    test "a diagnosed peer that connects again is reported once; an undiagnosed one is not" do
      gaps = %{a@h: gap_at(1, %{diagnosis: %{code: "cookie_mismatch"}}), b@h: gap_at(1)}
      {gaps, back} = Rules.gaps(gaps, set([:a@h, :b@h]), set([:a@h, :b@h]), 2_000, 4)
      assert [{:a@h, %{diagnosis: %{code: "cookie_mismatch"}}}] = back
      assert {%{}, []} = Rules.gaps(gaps, set([:a@h, :b@h]), set([:a@h, :b@h]), 3_000, 5)
    end

    test "unreachable and due after more than two polls by the updates' numbers, not before" do
      gaps = %{a@h: gap_at(10)}
      refute Rules.unreachable?(gaps[:a@h], 11)
      assert Rules.due(gaps, 11) == []
      assert Rules.polls(gaps[:a@h], 12) == 3
      assert Rules.unreachable?(gaps[:a@h], 12)
      assert Rules.due(gaps, 12) == [:a@h]
      # Updates skipped while a connect blocked still count.
      assert Rules.due(gaps, 19) == [:a@h]
    end

    test "one diagnosis in flight per peer; again three polls after the last one began" do
      gaps = %{a@h: gap_at(1, %{checking: 7, checked_at: 3}), b@h: gap_at(1)}
      assert Rules.due(gaps, 3) == [:b@h]
      assert Rules.due(gaps, 9) == [:b@h]
      gaps = put_in(gaps[:a@h].checking, nil)
      assert Rules.due(gaps, 5) == [:b@h]
      assert Rules.due(gaps, 6) == [:a@h, :b@h]
    end

    test "a diagnosis is said when it is the first or another, not when it repeats" do
      blocked = %{code: "dist_port_blocked", problem: "10.0.0.5:9100 does not answer", fix: "f"}
      assert Rules.diagnosis_change(nil, blocked) == :changed
      assert Rules.diagnosis_change(blocked, %{blocked | fix: "g"}) == :same
      assert Rules.diagnosis_change(blocked, %{blocked | code: "cookie_mismatch"}) == :changed
      assert Rules.diagnosis_change(blocked, %{blocked | problem: "other"}) == :changed
    end

    test "alone while discovery lists others: said once after more than two polls, and when it ends" do
      assert {{5, false}, :none} = Rules.alone(nil, 3, 0, 5)
      assert {{5, false}, :none} = Rules.alone({5, false}, 3, 0, 6)
      assert {{5, true}, :alone} = Rules.alone({5, false}, 3, 0, 7)
      assert {{5, true}, :none} = Rules.alone({5, true}, 3, 0, 8)
      assert {nil, :not_alone} = Rules.alone({5, true}, 3, 1, 9)
      # Connected again before it was said: nothing to take back.
      assert {nil, :none} = Rules.alone({5, false}, 3, 2, 6)
      assert {nil, :none} = Rules.alone(nil, 3, 1, 6)
      # Nobody listed: not alone "while discovery lists others".
      assert {nil, :none} = Rules.alone(nil, 0, 0, 6)
      assert {nil, :not_alone} = Rules.alone({5, true}, 0, 0, 9)
    end
  end

  describe "view/5: when a node takes part" do
    @ids ["ecs:eu-west-2/web/api", "ecs:us-west-2/web/api"]

    test "over TCP at once, whatever has answered" do
      assert :whole = Rules.view(false, false, MapSet.new(), @ids, 0)
    end

    test "over TLS once every source has answered once, and for good after" do
      one = MapSet.new(["ecs:eu-west-2/web/api"])
      assert {:waiting, ["ecs:us-west-2/web/api"]} = Rules.view(false, true, one, @ids, 1_000)
      assert {:waiting, _} = Rules.view(:said, true, one, @ids, 2_000)
      assert :whole = Rules.view(:said, true, MapSet.new(@ids), @ids, 2_000)
      assert :whole = Rules.view(true, true, MapSet.new(), @ids, 2_000)
    end

    test "over TLS with part of it once the wait is over, naming the sources missing" do
      wait = Rules.partial_view_wait_ms()
      one = MapSet.new(["ecs:eu-west-2/web/api"])
      assert {:waiting, _} = Rules.view(:said, true, one, @ids, wait - 1)
      assert {:partial, ["ecs:us-west-2/web/api"]} = Rules.view(:said, true, one, @ids, wait)
    end

    test "an answer is ok, skipping or absent; failing and pending are not" do
      assert Enum.filter(~w(ok skipping absent failing pending), &Rules.answered?/1) ==
               ~w(ok skipping absent)
    end
  end
end
