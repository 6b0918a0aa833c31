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
end
