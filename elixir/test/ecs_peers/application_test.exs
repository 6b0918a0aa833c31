defmodule EcsPeers.ApplicationTest do
  # What every topology shares is owned by the application's supervisor, not by whichever
  # topology starts first. No emulator needed. Not async: it kills the shared scope.
  use ExUnit.Case, async: false

  # Waits (at most 5 s) for `fun` to return a truthy value; returns it.
  defp eventually(fun, deadline \\ System.monotonic_time(:millisecond) + 5_000) do
    case fun.() do
      value when value not in [nil, false] ->
        value

      _ ->
        if System.monotonic_time(:millisecond) > deadline, do: flunk("not reached within 5 s")

        receive do
        after
          10 -> eventually(fun, deadline)
        end
    end
  end

  test "the sharing scope, the status registry and the diagnoses' tasks run under the application's supervisor" do
    children =
      for {id, pid, _, _} <- Supervisor.which_children(EcsPeers.Supervisor), do: {id, pid}

    assert {EcsPeers.Sharing, Process.whereis(EcsPeers.Sharing)} in children

    assert {EcsPeers.Status, Process.whereis(EcsPeers.Status)} in children
    assert {EcsPeers.Diagnoses, Process.whereis(EcsPeers.Diagnoses)} in children
  end

  test "a scope that dies is started again by the supervisor" do
    old = Process.whereis(EcsPeers.Sharing)
    ref = Process.monitor(old)
    Process.exit(old, :kill)
    assert_receive {:DOWN, ^ref, :process, ^old, :killed}
    new = eventually(fn -> Process.whereis(EcsPeers.Sharing) end)
    assert new != old
  end

  test "status/1 finds a topology's process through the registry, sharing or not" do
    assert {:ok, _table} = EcsPeers.Status.register(:app_test_topology)
    assert EcsPeers.Status.whereis(:app_test_topology) == [self()]
    assert EcsPeers.Status.whereis(:app_test_other) == []
  end
end
