defmodule EcsPeers.WithoutLibclusterTest do
  # libcluster is an optional dependency: the package's sources compile, with warnings as errors,
  # where no Cluster.Strategy exists (a Phoenix app with no libcluster), in an OS process of their
  # own (this test VM has the libcluster double loaded). There EcsPeers.Strategy is left out and
  # EcsPeers.Cluster, the libcluster-free child, works: it validates its configuration with the NIF.
  use ExUnit.Case, async: true

  @moduletag timeout: 180_000

  @elixir_dir Path.expand("../..", __DIR__)
  @nif Path.join(@elixir_dir, "priv/native/libecs_peers_nif.so")

  test "the package compiles and clusters without libcluster" do
    out =
      Path.join(System.tmp_dir!(), "ecs_peers_nolibcluster_#{System.unique_integer([:positive])}")

    File.mkdir_p!(out)
    on_exit(fn -> File.rm_rf!(out) end)
    sources = Path.wildcard(Path.join(@elixir_dir, "lib/**/*.ex"))

    {log, status} =
      System.cmd("elixirc", ["--warnings-as-errors", "-o", out | sources],
        stderr_to_stdout: true,
        env: [{"ECS_PEERS_OFFLINE", "1"}]
      )

    assert status == 0, log

    check = """
    false = Code.ensure_loaded?(Cluster.Strategy)
    false = Code.ensure_loaded?(EcsPeers.Strategy)
    :ignore = EcsPeers.Cluster.start_link(:ignore)
    Process.flag(:trap_exit, true)
    {:error, {:invalid_config, message}} =
      EcsPeers.Cluster.start_link(node_basename: "app", sources: [[type: :ecs, region: "eu-west"]])
    IO.puts("answered: " <> message)
    """

    {log, status} =
      System.cmd("elixir", ["-pa", out, "-e", check],
        stderr_to_stdout: true,
        env: [{"ECS_PEERS_NIF_PATH", @nif}]
      )

    assert status == 0, log
    assert log =~ "answered: sources[0].cluster: is required"
  end
end
