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
    # Runs `gaps/4` over a list of connected sets, one per update, with the same expected peers.
    defp after_updates(expected, connected_per_update, held \\ %{}) do
      Enum.reduce(connected_per_update, {held, []}, fn connected, {held, _} ->
        Rules.gaps(held, set(expected), set(connected), 1_000)
      end)
    end

    test "a peer not connected after an update has a gap, one poll longer each update" do
      {gaps, []} = after_updates([:a@h, :b@h], [[:a@h], [:a@h], [:a@h]])
      assert Map.keys(gaps) == [:b@h]
      assert %{polls: 3, since: 1_000, diagnosis: nil, checking: nil} = gaps[:b@h]
    end

    test "a connected peer, or one discovery no longer lists, has no gap" do
      {gaps, _} = after_updates([:a@h, :b@h], [[], []])
      assert {%{}, []} = Rules.gaps(gaps, set([:a@h, :b@h]), set([:a@h, :b@h]), 2_000)
      assert {%{}, []} = Rules.gaps(gaps, set([]), set([]), 2_000)
    end

    test "a diagnosed peer that connects again is reported once; an undiagnosed one is not" do
      {gaps, _} = after_updates([:a@h, :b@h], [[], [], []])
      gaps = put_in(gaps[:a@h].diagnosis, %{code: "cookie_mismatch", problem: "p"})
      {gaps, back} = Rules.gaps(gaps, set([:a@h, :b@h]), set([:a@h, :b@h]), 2_000)
      assert [{:a@h, %{diagnosis: %{code: "cookie_mismatch"}}}] = back
      assert {%{}, []} = Rules.gaps(gaps, set([:a@h, :b@h]), set([:a@h, :b@h]), 3_000)
    end

    test "unreachable and due for a diagnosis after more than two polls, not before" do
      {gaps, _} = after_updates([:a@h], [[], []])
      refute Rules.unreachable?(gaps[:a@h])
      assert Rules.due(gaps) == []
      {gaps, _} = Rules.gaps(gaps, set([:a@h]), set([]), 2_000)
      assert Rules.unreachable?(gaps[:a@h])
      assert Rules.due(gaps) == [:a@h]
    end

    test "one diagnosis in flight per peer; again three polls after the last one began" do
      {gaps, _} = after_updates([:a@h, :b@h], [[], [], []])
      assert Rules.due(gaps) == [:a@h, :b@h]
      gaps = %{gaps | a@h: %{gaps[:a@h] | checking: 7, checked_at: 3}}
      assert Rules.due(gaps) == [:b@h]
      {:changed, a} = Rules.diagnosed(gaps[:a@h], %{code: "dist_port_blocked", problem: "p"})
      gaps = %{gaps | a@h: a}
      {gaps, _} = Rules.gaps(gaps, set([:a@h, :b@h]), set([]), 2_000)
      {gaps, _} = Rules.gaps(gaps, set([:a@h, :b@h]), set([]), 3_000)
      assert :a@h not in Rules.due(gaps)
      {gaps, _} = Rules.gaps(gaps, set([:a@h, :b@h]), set([]), 4_000)
      assert :a@h in Rules.due(gaps)
    end

    test "a diagnosis is said when it is the first or another, not when it repeats" do
      {gaps, _} = after_updates([:a@h], [[], [], []])
      blocked = %{code: "dist_port_blocked", problem: "10.0.0.5:9100 does not answer", fix: "f"}
      {:changed, gap} = Rules.diagnosed(%{gaps[:a@h] | checking: 1}, blocked)
      assert gap.checking == nil and gap.diagnosis == blocked
      assert {:same, _} = Rules.diagnosed(gap, %{blocked | fix: "f"})
      assert {:changed, _} = Rules.diagnosed(gap, %{blocked | code: "cookie_mismatch"})
      assert {:changed, _} = Rules.diagnosed(gap, %{blocked | problem: "other"})
    end

    test "alone while discovery lists others: said once after more than two polls, and when it ends" do
      assert {1, :none} = Rules.alone(0, 3, 0)
      assert {2, :none} = Rules.alone(1, 3, 0)
      assert {3, :alone} = Rules.alone(2, 3, 0)
      assert {4, :none} = Rules.alone(3, 3, 0)
      assert {0, :not_alone} = Rules.alone(4, 3, 1)
      assert {0, :none} = Rules.alone(0, 3, 1)
      # Connected again before it was said: nothing to take back.
      assert {0, :none} = Rules.alone(2, 3, 2)
      # Nobody listed: not alone "while discovery lists others".
      assert {0, :none} = Rules.alone(0, 0, 0)
      assert {0, :not_alone} = Rules.alone(5, 0, 0)
    end
  end
end
