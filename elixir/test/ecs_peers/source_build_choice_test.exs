defmodule EcsPeers.SourceBuildChoiceTest do
  # `config :ecs_peers, build_from_source: true` is the source build's remembered switch: it is
  # read with compile_env when ecs_peers compiles. A fetched dependency (Hex, or git as here:
  # Mix compiles both once and recompiles them only when asked, unlike a path dependency) keeps
  # its compiled choice, and Elixir refuses to boot an app whose config says otherwise, naming
  # `mix deps.compile ecs_peers --force` (the command our hints give). Without Hex the choice
  # cannot build anything (no Rustler): the offline compile says it is ignored, which shows it
  # was read.
  use ExUnit.Case, async: true

  @moduletag timeout: 300_000

  @elixir_dir Path.expand("../..", __DIR__)

  defp run(cmd, args, dir, env \\ []) do
    base = [
      {"MIX_ENV", "dev"},
      {"ECS_PEERS_OFFLINE", "1"},
      {"ECS_PEERS_BUILD", nil},
      {"ECS_PEERS_NIF_PATH", nil},
      {"MIX_EXS", nil},
      {"MIX_BUILD_PATH", nil},
      {"MIX_DEPS_PATH", nil}
    ]

    System.cmd(cmd, args, cd: dir, env: base ++ env, stderr_to_stdout: true)
  end

  setup do
    dir = Path.join(System.tmp_dir!(), "ecs_peers_choice_#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf!(dir) end)

    # ecs_peers as a git repository: the package's files, committed.
    repo = Path.join(dir, "ecs_peers")
    File.mkdir_p!(repo)
    for f <- ~w(lib mix.exs test), do: File.cp_r!(Path.join(@elixir_dir, f), Path.join(repo, f))
    git = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
    {_, 0} = run("git", ["init", "-q"], repo)
    {_, 0} = run("git", ["add", "-A"], repo)
    {_, 0} = run("git", git ++ ["commit", "-qm", "ecs_peers"], repo)

    app = Path.join(dir, "app")
    File.mkdir_p!(Path.join(app, "config"))

    File.write!(Path.join(app, "mix.exs"), """
    defmodule Choice.MixProject do
      use Mix.Project

      def project do
        [app: :choice, version: "0.1.0", elixir: "~> 1.14", deps: [{:ecs_peers, git: #{inspect("file://" <> repo)}}]]
      end

      def application, do: [extra_applications: [:logger]]
    end
    """)

    File.write!(Path.join(app, "config/config.exs"), "import Config\n")
    {out, 0} = run("mix", ["deps.get"], app)
    {out2, status} = run("mix", ["compile"], app)
    assert status == 0, out <> out2
    %{app: app}
  end

  test "build_from_source set after ecs_peers compiled is refused at boot, naming the recompile that keeps it",
       %{app: app} do
    File.write!(
      Path.join(app, "config/config.exs"),
      "import Config\nconfig :ecs_peers, build_from_source: true\n"
    )

    {out, status} = run("mix", ["run", "-e", "IO.puts(:choice_booted)"], app)
    assert status != 0, out
    refute out =~ "choice_booted"

    assert out =~
             "the application :ecs_peers has a different value set for key :build_from_source during runtime compared to compile time"

    assert out =~ ~s(you may need to run "mix deps.compile ecs_peers --force")

    {out, status} = run("mix", ["deps.compile", "ecs_peers", "--force"], app)
    assert status == 0, out

    assert out =~
             "ecs_peers: build_from_source is ignored: this copy compiles without RustlerPrecompiled"

    # Remembered: a plain compile and a boot keep it, with no variable set.
    {out, status} = run("mix", ["run", "-e", "IO.puts(:choice_booted)"], app)
    assert status == 0, out
    assert out =~ "choice_booted"
  end
end
