defmodule EcsPeers.FreshAppTest do
  # A new application with ecs_peers as a path dependency, as a user would write it, compiled and
  # booted by Mix in its own OS processes. Without Hex (ECS_PEERS_OFFLINE=1) ecs_peers compiles
  # against the libcluster contract double and loads a NIF built by cargo; the branches through
  # rustler / rustler_precompiled need Hex and are not exercised here.
  use ExUnit.Case, async: true

  @moduletag timeout: 300_000

  @elixir_dir Path.expand("../..", __DIR__)
  @nif Path.join(@elixir_dir, "priv/native/libecs_peers_nif.so")

  @application """
  defmodule Fresh.Application do
    use Application

    def start(_type, _args) do
      topologies = Application.get_env(:fresh, :topologies, [])

      children = [
        {Cluster.Supervisor, [topologies, [name: Fresh.ClusterSupervisor]]}
      ]

      Supervisor.start_link(children, strategy: :one_for_one, name: Fresh.Supervisor)
    end
  end
  """

  # (Under the app's own key: the libcluster double is not an application of its own.)
  # Sources are read from FRESH_SOURCES at boot; the endpoint is a closed loopback port, so a good
  # configuration starts (its polls fail and are logged) without reaching AWS.
  @runtime """
  import Config

  config :fresh,
    topologies: [
      ecs: [
        strategy: EcsPeers.Strategy,
        config: [
          node_basename: "fresh",
          endpoint_url: "http://127.0.0.1:9",
          sources: Code.eval_string(System.get_env("FRESH_SOURCES", "[]")) |> elem(0)
        ]
      ]
    ]
  """

  setup_all do
    assert File.exists?(@nif), "build the NIF first (scripts/lib.sh build_nif)"
    dir = Path.join(System.tmp_dir!(), "ecs_peers_fresh_#{System.unique_integer([:positive])}")
    File.mkdir_p!(Path.join(dir, "lib"))
    File.mkdir_p!(Path.join(dir, "config"))

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule Fresh.MixProject do
      use Mix.Project

      def project do
        [app: :fresh, version: "0.1.0", elixir: "~> 1.14", deps: [{:ecs_peers, path: #{inspect(@elixir_dir)}}]]
      end

      def application, do: [mod: {Fresh.Application, []}, extra_applications: [:logger]]
    end
    """)

    File.write!(Path.join(dir, "lib/application.ex"), @application)
    File.write!(Path.join(dir, "config/runtime.exs"), @runtime)

    nifs = Path.join(dir, "nifs")
    File.mkdir_p!(nifs)
    File.cp!(@nif, Path.join(nifs, "libecs_peers_nif.so"))

    {out, status} = mix(dir, ["compile"], [])
    assert status == 0, out
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir, nif: Path.join(nifs, "libecs_peers_nif.so")}
  end

  defp mix(dir, args, env) do
    base = [
      {"MIX_ENV", "dev"},
      {"ECS_PEERS_OFFLINE", "1"},
      {"ECS_PEERS_NIF_PATH", nil},
      {"MIX_EXS", nil},
      {"MIX_BUILD_PATH", nil},
      {"MIX_DEPS_PATH", nil}
    ]

    System.cmd("mix", args, cd: dir, env: base ++ env, stderr_to_stdout: true)
  end

  @good ~s([[type: :ecs, region: "eu-west-2", cluster: "web"]])

  @validate ~s[IO.puts("ANSWER " <> inspect(EcsPeers.validate(node_basename: "a", sources: #{@good})))]

  test "compiles, and loads the NIF given by ECS_PEERS_NIF_PATH with or without .so", ctx do
    for given <- [ctx.nif, String.trim_trailing(ctx.nif, ".so")] do
      {out, status} =
        mix(ctx.dir, ["run", "-e", @validate], [
          {"FRESH_SOURCES", @good},
          {"ECS_PEERS_NIF_PATH", given}
        ])

      assert status == 0, out
      # share_polling/sharing_key: fleet-shared polling, on by default, and the group's key.
      assert out =~
               ~r/ANSWER \{:ok, %\{.*poll_timeout: 20000, polling_interval: 5000, share_polling: true, share_polling_given: false, sharing_key: "[0-9a-f]{16}"\}\}/,
             out
    end
  end

  test "a bad configuration stops the application from starting, naming the key", ctx do
    {out, status} =
      mix(ctx.dir, ["run", "-e", "IO.puts(:started)"], [
        {"FRESH_SOURCES", ~s([[type: :ecs, region: "eu-west", cluster: "web"]])},
        {"ECS_PEERS_NIF_PATH", ctx.nif}
      ])

    assert status != 0
    refute out =~ "started"

    assert out =~
             ~s([libcluster:ecs] EcsPeers.Strategy cannot start: sources[0].region: "eu-west" is not an AWS region name)

    assert out =~
             "** (Mix) Could not start application fresh: Fresh.Application.start(:normal, []) returned an error: shutdown: failed to start child: Cluster.Supervisor\n    ** (EXIT) shutdown: failed to start child: :ecs\n"

    assert out =~
             ~s|{:invalid_config, "sources[0].region: \\"eu-west\\" is not an AWS region name|
  end

  test "a NIF that does not load stops the application from starting, saying why and how to fix it",
       ctx do
    missing = Path.join(Path.dirname(ctx.nif), "missing.so")

    {out, status} =
      mix(ctx.dir, ["run", "-e", "IO.puts(:started)"], [
        {"FRESH_SOURCES", @good},
        {"ECS_PEERS_NIF_PATH", missing}
      ])

    assert status != 0
    refute out =~ "started"

    assert out =~
             "[libcluster:ecs] EcsPeers.Strategy cannot start: the ecs-peers NIF is not loaded: cannot load the NIF from ECS_PEERS_NIF_PATH=#{missing}"

    assert out =~ "** (Mix) Could not start application fresh"
  end
end
