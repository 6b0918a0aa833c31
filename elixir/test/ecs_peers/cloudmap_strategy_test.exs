defmodule EcsPeers.CloudMapStrategyTest do
  # Cloud Map sources as the strategy sees them: SRV instances of bridge-mode tasks on one host
  # are two peers, each handed to the EPMD-less bridge (EcsPeers.Epmd) at its own port; the
  # instances a source cannot use are a warning with the fix, as ECS's skipped tasks are. Not
  # async: the bridge's lookup is a named table, one per VM.
  use ExUnit.Case, async: false
  # Needs the AWS emulator: left out of the quick tier (mix test --exclude emulator).
  @moduletag :emulator

  import ExUnit.CaptureLog

  alias Cluster.Strategy.State
  alias EcsPeers.Test.{Emu, Recorder}

  @t1 "4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11"
  @t2 "9a8b7c6d5e4f40312a1b2c3d4e5f6a7b"

  setup do
    emu = Emu.shared()
    rec = Recorder.start(self())
    {:ok, emu: emu, rec: rec}
  end

  defp start_strategy(emu, rec, sources) do
    state = %State{
      topology: :cloudmap,
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

  test "two SRV instances on one host are two nodes, each dialled at its registered port",
       %{emu: emu, rec: rec} do
    ns = "n#{System.unique_integer([:positive])}"

    Emu.seed(emu, %{
      cloudmap: [
        %{
          region: "us-west-2",
          namespace: ns,
          service: "api",
          records: ["SRV"],
          instances: [
            %{id: @t1, ipv4: "10.235.0.10", port: 32768},
            %{id: @t2, ipv4: "10.235.0.10", port: 32769}
          ]
        }
      ]
    })

    start_supervised!(%{id: EcsPeers.Epmd, start: {EcsPeers.Epmd, :start_link, []}})

    capture_log(fn ->
      start_strategy(emu, rec, [
        [type: :cloudmap, region: "us-west-2", namespace: ns, service: "api"]
      ])

      assert_receive {:connect, _}, 5_000
      assert_receive {:connect, _}, 5_000
    end)

    for {id, port} <- [{@t1, 32768}, {@t2, 32769}] do
      assert EcsPeers.Epmd.lookup("app-#{id}@10.235.0.10") == {:ok, {{10, 235, 0, 10}, port}}
    end
  end

  test "instances without an address attribute are logged as a warning, with the fix",
       %{emu: emu, rec: rec} do
    ns = "n#{System.unique_integer([:positive])}"

    Emu.seed(emu, %{
      cloudmap: [
        %{
          region: "us-west-2",
          namespace: ns,
          service: "api",
          instances: [%{id: "custom-1", attributes: %{stage: "blue"}}]
        }
      ]
    })

    log =
      capture_log(fn ->
        start_strategy(emu, rec, [
          [type: :cloudmap, region: "us-west-2", namespace: ns, service: "api"]
        ])

        for _ <- 1..4, do: assert_receive(:listed, 5_000)
      end)

    assert log =~
             ~r/\[warn(ing)?\].*\[libcluster:cloudmap\].*1 Cloud Map instance\(s\) skipped \(no_address_attribute, e\.g\. instance custom-1\)/

    assert log =~ "Fix: register the instance with AWS_INSTANCE_IPV4"
    # Once per change, not once per poll.
    assert length(String.split(log, "skipped")) == 2
  end
end
