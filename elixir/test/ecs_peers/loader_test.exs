defmodule EcsPeers.LoaderTest do
  # How the NIF is found: ECS_PEERS_NIF_PATH (run time, with or without .so), the options given to
  # RustlerPrecompiled, and a hint that is true for the builder that prints it.
  use ExUnit.Case, async: false

  alias EcsPeers.Native.Loader

  @nif Path.expand("../../priv/native/libecs_peers_nif.so", __DIR__)

  test "ECS_PEERS_NIF_PATH is given to load_nif/2 without its .so, and unset or empty means the default" do
    assert Loader.nif_path(nil) == nil
    assert Loader.nif_path("") == nil
    assert Loader.nif_path("/opt/nif/libecs_peers_nif.so") == "/opt/nif/libecs_peers_nif"
    assert Loader.nif_path("/opt/nif/libecs_peers_nif") == "/opt/nif/libecs_peers_nif"
    assert Loader.nif_path("rel/libecs_peers_nif.so") == "rel/libecs_peers_nif"
    # Only a trailing extension is the extension.
    assert Loader.nif_path("/opt/nif.so/libecs_peers_nif") == "/opt/nif.so/libecs_peers_nif"
    assert Loader.nif_path("/opt/libecs_peers_nif.so.1") == "/opt/libecs_peers_nif.so.1"
  end

  test "ECS_PEERS_NIF_PATH is read when the module loads and wins over every builder" do
    me = self()
    load = fn arg -> send(me, {:loaded, arg}) && :ok end

    for builder <- [:precompiled, :source, :cargo] do
      assert Loader.load(builder, load, "/opt/nif/libecs_peers_nif.so") == :ok
      assert_received {:loaded, {:path, ~c"/opt/nif/libecs_peers_nif"}}

      assert Loader.load(builder, load, nil) == :ok
      assert_received {:loaded, :default}
    end
  end

  test "a NIF that does not load is an :ok with the reason kept (the module still loads)" do
    message =
      ExUnit.CaptureLog.capture_log(fn ->
        assert Loader.load(
                 :cargo,
                 fn _ -> {:error, {:load_failed, ~c"no such file"}} end,
                 "/x.so"
               ) ==
                 :ok
      end)

    assert message =~ "ECS_PEERS_NIF_PATH=/x.so (/x.so): no such file"
    # A loader that raises is kept the same way.
    ExUnit.CaptureLog.capture_log(fn ->
      assert Loader.load(:cargo, fn _ -> raise "boom" end, nil) == :ok
    end)
  after
    # This VM's NIF is loaded: forget the failures recorded above.
    Loader.load(:cargo, fn _ -> :ok end, nil)
  end

  test "each hint names a fix that works for the builder that prints it" do
    reason = {:load_failed, ~c"cannot open shared object file"}

    cargo = Loader.failure(:cargo, :default, reason)
    assert cargo =~ "cannot open shared object file"
    assert cargo =~ "cargo build -p ecs_peers_nif"
    assert cargo =~ "ECS_PEERS_NIF_PATH"
    refute cargo =~ "ECS_PEERS_BUILD"
    refute cargo =~ "force_build"

    precompiled = Loader.failure(:precompiled, :default, reason)
    assert precompiled =~ "config :rustler_precompiled, :force_build, ecs_peers: true"
    assert precompiled =~ "ECS_PEERS_BUILD=1"
    assert precompiled =~ "mix deps.compile ecs_peers --force"
    # The rustler requirement in the hint is the one mix.exs declares.
    [requirement] =
      Regex.run(~r/\{:rustler, "([^"]+)"/, File.read!("mix.exs"), capture: :all_but_first)

    assert precompiled =~ ~s({:rustler, "#{requirement}", optional: true})

    source = Loader.failure(:source, :default, reason)
    assert source =~ "built from source"
    assert source =~ "mix deps.compile ecs_peers --force"
    refute source =~ "ECS_PEERS_BUILD"

    for builder <- [:precompiled, :source, :cargo] do
      env = Loader.failure(builder, {:env, "/x/lib.so", "/x/lib"}, reason)
      assert env =~ "ECS_PEERS_NIF_PATH=/x/lib.so (/x/lib.so)"
      refute env =~ "ECS_PEERS_BUILD"
    end
  end

  test "the error of an EcsPeers call without a NIF carries this build's hint" do
    # This suite compiles without RustlerPrecompiled: ECS_PEERS_BUILD would change nothing.
    assert EcsPeers.Native.builder() == :cargo

    assert {:error, message} = EcsPeers.native(fn -> :erlang.nif_error(:nif_not_loaded) end)
    assert message =~ "the ecs-peers NIF is not loaded: "
    assert message =~ "cargo build -p ecs_peers_nif"
    refute message =~ "ECS_PEERS_BUILD"
  end

  test "RustlerPrecompiled gets :force_build only when ECS_PEERS_BUILD asks, so its app config counts" do
    # RustlerPrecompiled reads `config :rustler_precompiled, :force_build, ecs_peers: true` only
    # when the option is absent (Keyword.put_new in RustlerPrecompiled.__using__/1).
    for value <- [nil, "", "0", "false", "yes"] do
      opts = Loader.precompiled_options("1.2.3", value)
      refute Keyword.has_key?(opts, :force_build), "ECS_PEERS_BUILD=#{inspect(value)}"
    end

    for value <- ["1", "true"] do
      assert Loader.precompiled_options("1.2.3", value)[:force_build] == true
    end

    opts = Loader.precompiled_options("1.2.3", nil)
    assert opts[:otp_app] == :ecs_peers
    assert opts[:crate] == "ecs_peers_nif"
    assert opts[:version] == "1.2.3"
    assert opts[:base_url] == "https://github.com/ecs-peers/ecs-peers/releases/download/v1.2.3"
    assert opts[:targets] == Loader.targets()
    assert opts[:nif_versions] == Loader.nif_versions()
  end

  # The @on_load a `use RustlerPrecompiled` (or Rustler, for a source build) registers becomes
  # the default behind ECS_PEERS_NIF_PATH. Those libraries cannot be installed here (no Hex), so a
  # module registers an @on_load the way they do (in its body, or in a before_compile) under
  # their function names; nothing else of theirs is imitated.
  for {fun, builder} <- [load_rustler_precompiled: :precompiled, rustler_init: :source] do
    test "the #{fun} loader stays the default and ECS_PEERS_NIF_PATH is checked first" do
      fun = unquote(fun)
      mod = Module.concat(__MODULE__, "Registered#{fun}")
      key = {__MODULE__, fun}

      code = """
      defmodule #{inspect(mod)} do
        @on_load #{inspect(fun)}
        def #{fun} do
          :persistent_term.put(#{inspect(key)}, :default_loader_ran)
          :ok
        end

        @before_compile EcsPeers.Native.Loader
      end
      """

      System.delete_env("ECS_PEERS_NIF_PATH")
      [{^mod, _}] = Code.compile_string(code)
      assert mod.builder() == unquote(builder)
      assert :persistent_term.get(key) == :default_loader_ran

      # Reloaded with ECS_PEERS_NIF_PATH set: that library is tried instead of the default.
      :persistent_term.erase(key)
      :code.purge(mod)
      :code.delete(mod)
      :code.purge(mod)
      System.put_env("ECS_PEERS_NIF_PATH", "/nonexistent/libecs_peers_nif.so")

      log =
        ExUnit.CaptureLog.capture_log(fn ->
          [{^mod, _}] = Code.compile_string(code)
        end)

      assert :persistent_term.get(key, :not_run) == :not_run
      assert log =~ "ECS_PEERS_NIF_PATH=/nonexistent/libecs_peers_nif.so"
    after
      System.delete_env("ECS_PEERS_NIF_PATH")
      Loader.load(:cargo, fn _ -> :ok end, nil)
    end
  end

  @tag timeout: 120_000
  test "a fresh BEAM loads the NIF named by ECS_PEERS_NIF_PATH, with or without .so" do
    assert File.exists?(@nif), "build the NIF first (scripts/lib.sh build_nif)"

    # Copied elsewhere, so the default location cannot be what answers.
    dir = Path.join(System.tmp_dir!(), "ecs_peers_loader_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    copy = Path.join(dir, "libecs_peers_nif.so")
    File.cp!(@nif, copy)

    for given <- [copy, String.trim_trailing(copy, ".so")] do
      out = EcsPeers.Test.FreshBeam.validate([{"ECS_PEERS_NIF_PATH", given}])
      assert out =~ "VALIDATED %{", "ECS_PEERS_NIF_PATH=#{given}: #{out}"
    end

    missing = Path.join(dir, "nothing.so")
    out = EcsPeers.Test.FreshBeam.validate([{"ECS_PEERS_NIF_PATH", missing}])

    assert out =~
             "ERROR the ecs-peers NIF is not loaded: cannot load the NIF from ECS_PEERS_NIF_PATH=#{missing} (#{missing}):"
  end
end
