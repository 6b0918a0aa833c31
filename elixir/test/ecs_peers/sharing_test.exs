defmodule EcsPeers.SharingTest do
  # Fleet-shared polling (issue 13): the parts that need no sharing core (status/1, results for
  # another group). The multi-node tests come with the core's share/receive_shared NIFs.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias EcsPeers.Test.Emu

  setup do
    emu = Application.fetch_env!(:ecs_peers, :test_emu)
    Emu.clear_faults(emu)
    {:ok, emu: emu, id: System.unique_integer([:positive])}
  end

  test "status/1 by topology; a result for another group is dropped and counted", ctx do
    c = "s#{ctx.id}"

    Emu.seed(ctx.emu, %{
      ecs: [
        %{
          region: "eu-west-2",
          cluster: c,
          subnet: "10.241.0.0/24",
          tasks: [%{family: "api", count: 1, group: "service:api"}]
        }
      ]
    })

    config = [
      node_basename: "app",
      endpoint_url: ctx.emu.endpoint,
      max_attempts: 1,
      polling_interval: 1_000,
      poll_timeout: 3_000,
      sources: [[type: :ecs, region: "eu-west-2", cluster: c, service: "api"]]
    ]

    capture_log(fn ->
      pid = start_supervised!({EcsPeers.Cluster, config ++ [name: :solo]})
      assert {:ok, %{topology: :solo, sharing: %{dropped: 0}}} = EcsPeers.status(:solo)
      assert {:error, "no EcsPeers.Strategy or EcsPeers.Cluster" <> _} = EcsPeers.status(:nope)

      send(pid, {:ecs_peers_shared, {:ecs_peers, :other, "0", 1}, :"x@10.0.0.1", "result"})
      send(pid, {:ecs_peers_shared, :garbage, "not an atom", 42})
      assert {:ok, %{sharing: %{dropped: 2}}} = EcsPeers.status(pid)
      assert Process.alive?(pid)
    end)
  end
end
