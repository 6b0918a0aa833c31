defmodule EcsPeers.ReleaseBootTest do
  # The release's boot step: EcsPeers.Release and examples/rel/env.sh.eex, which calls it. The
  # name itself is the core's (ecs_peers::this_task, the rule that names peers); the e2e bed
  # boots a real `mix release` for each task shape against the emulator
  # (tests/e2e/release_test.py). Here, without the emulator: the exact shell text, env.sh's
  # control flow around a stand-in bin/<release>, and the failure path through the real NIF in
  # a VM of its own (the NIF reads the OS environment, which this VM cannot change).
  use ExUnit.Case, async: true

  alias EcsPeers.Release
  alias EcsPeers.Test.MetadataServer

  @task_id "4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11"
  @task_arn "arn:aws:ecs:eu-west-2:111122223333:task/web/#{@task_id}"

  describe "render/2: the export lines env.sh evaluates" do
    test "an IPv4 name" do
      assert Release.render("my_app@10.0.2.106", "my_app") == """
             export RELEASE_NODE='my_app@10.0.2.106'
             export RELEASE_DISTRIBUTION='name'
             export ECS_PEERS_NODE_BASENAME='my_app'
             """
    end

    test "an IPv6 name also makes distribution use IPv6, keeping ERL_AFLAGS' own flags" do
      text = Release.render("my_app@fdec:5ee5:201::4", "my_app")
      assert text =~ "export RELEASE_NODE='my_app@fdec:5ee5:201::4'\n"

      assert {"name my_app@fdec:5ee5:201::4|+S 1 -proto_dist inet6_tcp\n", 0} =
               sh(text <> ~S(echo "$RELEASE_DISTRIBUTION $RELEASE_NODE|$ERL_AFLAGS"),
                 env: [{"ERL_AFLAGS", "+S 1"}]
               )

      assert {"-proto_dist inet6_tcp\n", 0} =
               sh(text <> ~S(echo "$ERL_AFLAGS"), env: [{"ERL_AFLAGS", nil}])
    end

    test "a bridge-mode name on an IPv4 instance does not" do
      refute Release.render("my_app-#{@task_id}@10.0.1.5", "my_app") =~ "inet6"
    end

    test "with TLS (ECS_PEERS_TLS_CA set) distribution runs over EcsPeers.TLS, IPv4 or IPv6" do
      for {node, proto} <- [
            {"my_app@10.0.2.106", "ecs_peers_tls"},
            {"my_app-#{@task_id}@10.0.1.5", "ecs_peers_tls"},
            {"my_app@fdec:5ee5:201::4", "ecs_peers_tls6"}
          ] do
        text = Release.render(node, "my_app", tls: true)

        assert {"+S 1 -proto_dist #{proto}\n", 0} ==
                 sh(text <> ~S(echo "$ERL_AFLAGS"), env: [{"ERL_AFLAGS", "+S 1"}])
      end
    end

    test "values are quoted for sh" do
      assert {"it's\n", 0} =
               sh(Release.render("a@10.0.0.1", "it's") <> ~S(echo "$ECS_PEERS_NODE_BASENAME"))
    end
  end

  describe "examples/rel/env.sh.eex around a stand-in bin/<release>" do
    setup do
      root = Path.join(System.tmp_dir!(), "ecs_peers_rel_#{System.unique_integer([:positive])}")
      File.mkdir_p!(Path.join(root, "bin"))
      on_exit(fn -> File.rm_rf!(root) end)

      # Records each call (its arguments and the basename it was given), then answers as
      # EcsPeers.Release.env/0 would: STUB_OUTPUT on stdout, STUB_STATUS as its exit status.
      stub = Path.join(root, "bin/my_app")

      File.write!(stub, ~S"""
      #!/bin/sh
      echo "$*|$ECS_PEERS_NODE_BASENAME" >> "$RELEASE_ROOT/calls"
      [ "${STUB_STATUS:-0}" = 0 ] || { echo "ecs-peers (rel/env.sh): the reason and its fix" >&2; exit "$STUB_STATUS"; }
      printf '%s' "$STUB_OUTPUT"
      """)

      File.chmod!(stub, 0o755)

      env_sh = Path.join(root, "env.sh")

      File.write!(
        env_sh,
        EEx.eval_file(Path.expand("../../../examples/rel/env.sh.eex", __DIR__),
          assigns: [release: %{name: :my_app}]
        )
      )

      %{root: root, env_sh: env_sh}
    end

    # As bin/<release> does: `set -e`, then source env.sh.
    defp run_env_sh(ctx, env) do
      base = [
        {"RELEASE_ROOT", ctx.root},
        {"RELEASE_NAME", "my_app"},
        {"RELEASE_NODE", nil},
        {"ECS_PEERS_NODE_BASENAME", nil},
        {"ECS_PEERS_STATIC_PEERS", nil},
        {"ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/c1"},
        {"STUB_OUTPUT", Release.render("my_app@10.0.2.106", "my_app")}
      ]

      System.cmd(
        "sh",
        [
          "-c",
          ~S[set -e; . "$0"; echo "$RELEASE_DISTRIBUTION $RELEASE_NODE|$ECS_PEERS_STATIC_PEERS"],
          ctx.env_sh
        ],
        env: base ++ env,
        stderr_to_stdout: true
      )
    end

    defp calls(ctx) do
      case File.read(Path.join(ctx.root, "calls")) do
        {:ok, text} -> String.split(text, "\n", trim: true)
        {:error, :enoent} -> []
      end
    end

    test "start: the name comes from one `eval 'EcsPeers.Release.env()'` of the release itself",
         ctx do
      assert run_env_sh(ctx, [{"RELEASE_COMMAND", "start"}]) ==
               {"name my_app@10.0.2.106|\n", 0}

      assert calls(ctx) == ["eval EcsPeers.Release.env()|my_app"]
    end

    test "a basename of one's own is handed to the boot step", ctx do
      env = [{"RELEASE_COMMAND", "start"}, {"ECS_PEERS_NODE_BASENAME", "web"}]
      assert {_, 0} = run_env_sh(ctx, env)
      assert calls(ctx) == ["eval EcsPeers.Release.env()|web"]
    end

    test "remote and rpc: the same name, and the node itself on loopback", ctx do
      for command <- ~w(remote rpc) do
        assert run_env_sh(ctx, [{"RELEASE_COMMAND", command}]) ==
                 {"name my_app@10.0.2.106|my_app@10.0.2.106=127.0.0.1 \n", 0}
      end
    end

    test "eval and version start no distribution and do not call the boot step (no recursion)",
         ctx do
      for command <- ~w(eval version) do
        assert run_env_sh(ctx, [{"RELEASE_COMMAND", command}]) == {" |\n", 0}
      end

      assert calls(ctx) == []
    end

    test "a boot step that fails stops the command, its reason passed on", ctx do
      {out, status} = run_env_sh(ctx, [{"RELEASE_COMMAND", "start"}, {"STUB_STATUS", "1"}])
      assert status == 1
      assert out =~ "ecs-peers (rel/env.sh): the reason and its fix\n"
      assert out =~ "this node was not named (the reason is above); bin/my_app start did not run"
    end

    test "outside ECS, or with RELEASE_NODE set, nothing is called or changed", ctx do
      assert run_env_sh(ctx, [
               {"RELEASE_COMMAND", "start"},
               {"ECS_CONTAINER_METADATA_URI_V4", nil}
             ]) == {" |\n", 0}

      assert run_env_sh(ctx, [
               {"RELEASE_COMMAND", "start"},
               {"RELEASE_NODE", "me@10.9.9.9"},
               {"RELEASE_DISTRIBUTION", "name"}
             ]) == {"name me@10.9.9.9|\n", 0}

      assert calls(ctx) == []
    end
  end

  describe "EcsPeers.Release.env/0 in a VM of its own, through the NIF" do
    # Shaped like ECS's ${ECS_CONTAINER_METADATA_URI_V4}/task.
    @task_doc ~s({"Cluster":"arn:aws:ecs:eu-west-2:111122223333:cluster/web","TaskARN":"#{@task_arn}",) <>
                ~s("Family":"app","Containers":[{"Name":"app","Networks":[{"NetworkMode":"awsvpc","IPv4Addresses":["10.0.2.106"]}]}],"LaunchType":"FARGATE"})

    defp release_env(env) do
      ebin = Path.dirname(:code.which(EcsPeers.Release))

      nif = System.get_env("ECS_PEERS_NIF_PATH") || EcsPeers.Native.Loader.cargo_nif()

      System.cmd("elixir", ["-pa", ebin, "-e", "EcsPeers.Release.env()"],
        env:
          [
            {"ECS_PEERS_NIF_PATH", nif},
            {"RELEASE_NAME", "my_app"},
            {"ECS_PEERS_NODE_BASENAME", nil},
            {"AWS_ACCESS_KEY_ID", "test"},
            {"AWS_SECRET_ACCESS_KEY", "test"},
            {"AWS_REGION", nil},
            {"AWS_EC2_METADATA_DISABLED", "true"},
            {"AWS_MAX_ATTEMPTS", "1"}
          ] ++ env,
        stderr_to_stdout: true
      )
    end

    test "outside a task it stops with status 1, naming the fix" do
      {out, status} = release_env([{"ECS_CONTAINER_METADATA_URI_V4", nil}])
      assert status == 1, out

      assert out =~
               "ecs-peers (rel/env.sh): ecs:task-metadata failed (not_found): ECS_CONTAINER_METADATA_URI_V4 is not set. Fix: run inside an ECS task"
    end

    test "AWS unreachable: the task's own metadata is read, then DescribeTasks fails, named" do
      server = MetadataServer.start(%{"/v4/c1/task" => @task_doc})
      on_exit(fn -> MetadataServer.stop(server) end)

      {out, status} =
        release_env([
          {"ECS_CONTAINER_METADATA_URI_V4", server.url <> "/v4/c1"},
          {"AWS_ENDPOINT_URL", "http://127.0.0.1:9"}
        ])

      assert status == 1, out
      assert out =~ "ecs-peers (rel/env.sh): ecs:DescribeTasks failed", out
      refute out =~ "export RELEASE_NODE"
    end
  end

  defp sh(script, opts \\ []) do
    System.cmd("sh", ["-c", "set -e\n" <> script], Keyword.put_new(opts, :stderr_to_stdout, true))
  end
end
