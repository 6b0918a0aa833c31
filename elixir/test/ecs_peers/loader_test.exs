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
    # The remembered switch, the forced recompile, what it costs, how to keep cargo's build,
    # and where the downloaded tarball is.
    assert precompiled =~ "`config :ecs_peers, build_from_source: true` to config/config.exs"
    assert precompiled =~ "mix deps.compile ecs_peers --force"
    assert precompiled =~ ~r/about \d+ CPU-minutes and up to \d+ GB of memory the first time/
    assert precompiled =~ ~s(config :ecs_peers, EcsPeers.Native, target_dir: "/a/kept/dir")
    assert precompiled =~ "its tarball is kept in #{Loader.precompiled_cache_dir()}"
    # ECS_PEERS_BUILD is not proposed: it is forgotten by the next recompile.
    refute precompiled =~ "ECS_PEERS_BUILD"
    # The rustler requirement in the hint is the one mix.exs declares.
    [requirement] =
      Regex.run(~r/\{:rustler, "([^"]+)"/, File.read!("mix.exs"), capture: :all_but_first)

    assert precompiled =~ ~s({:rustler, "#{requirement}", optional: true})
    assert Loader.rustler_missing(:config) =~ ~s({:rustler, "#{requirement}", optional: true})

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

  test "an argument the NIF cannot decode (badarg) is an error, not a crash of the caller" do
    # A NIF's badarg reaches Elixir as %ArgumentError{}, which `rescue e in ErlangError` catches
    # too (without the :original field of an ErlangError).
    assert EcsPeers.native(fn -> :erlang.error(:badarg) end) ==
             {:error, "ecs-peers NIF failed: argument error"}

    assert EcsPeers.native(fn -> :erlang.error(:some_panic) end) ==
             {:error, "ecs-peers NIF failed: :some_panic"}
  end

  test "a source build is chosen by build_from_source (remembered) or ECS_PEERS_BUILD (this compile)" do
    for value <- [nil, "", "0", "false", "yes"] do
      assert Loader.source_build(false, value) == nil, "ECS_PEERS_BUILD=#{inspect(value)}"
      assert Loader.source_build(nil, value) == nil
      assert Loader.source_build(true, value) == :config
    end

    assert Loader.source_build(false, "1") == :env
    assert Loader.source_build(nil, "true") == :env

    assert_raise ArgumentError,
                 ~s(config :ecs_peers, build_from_source: "yes": expected true or false) <>
                   " (true builds the NIF from source with Rustler instead of downloading it)",
                 fn -> Loader.source_build("yes", nil) end

    # The one-compile switch says it is forgotten, and how to keep it.
    notice = Loader.env_build_notice()

    assert notice =~
             "a later recompile of ecs_peers without the variable downloads the precompiled NIF again"

    assert notice =~ "add `config :ecs_peers, build_from_source: true` to config/config.exs"
  end

  test "RustlerPrecompiled gets :force_build only for a source build, so its app config counts" do
    # RustlerPrecompiled reads `config :rustler_precompiled, :force_build, ecs_peers: true` only
    # when the option is absent (Keyword.put_new in RustlerPrecompiled.__using__/1).
    refute Keyword.has_key?(Loader.precompiled_options("1.2.3", nil), :force_build)

    for choice <- [:config, :env] do
      assert Loader.precompiled_options("1.2.3", choice)[:force_build] == true
    end

    opts = Loader.precompiled_options("1.2.3", nil)
    assert opts[:otp_app] == :ecs_peers
    assert opts[:crate] == "ecs_peers_nif"
    assert opts[:version] == "1.2.3"
    assert opts[:base_url] == "https://github.com/ecs-peers/ecs-peers/releases/download/v1.2.3"
    assert opts[:targets] == Loader.targets()
    assert opts[:nif_versions] == Loader.nif_versions()
  end

  test "RustlerPrecompiled's own source-build switches are recognised, so its build is not second-guessed" do
    refute Loader.forced_by_rustler_precompiled?([], nil)
    refute Loader.forced_by_rustler_precompiled?([force_build: [other_app: true]], "0")
    assert Loader.forced_by_rustler_precompiled?([force_build: [ecs_peers: true]], nil)
    assert Loader.forced_by_rustler_precompiled?([force_build_all: true], nil)
    assert Loader.forced_by_rustler_precompiled?([], "1")
    assert Loader.forced_by_rustler_precompiled?([], "true")
    # The configured force_build_all wins over the variable, as in RustlerPrecompiled.
    refute Loader.forced_by_rustler_precompiled?([force_build_all: false], "1")

    assert Loader.rustler_missing(:rustler_precompiled) =~
             "RustlerPrecompiled's force_build is set"
  end

  test "a platform with no precompiled NIF is told to build from source" do
    assert Loader.unsupported_target({:ok, "nif-2.16-x86_64-unknown-linux-gnu"}) == nil
    assert Loader.unsupported_target({:ok, "nif-2.15-aarch64-apple-darwin"}) == nil

    message = Loader.unsupported_target({:ok, "nif-2.16-riscv64gc-unknown-linux-gnu"})

    assert message =~
             "no precompiled NIF for this platform (riscv64gc-unknown-linux-gnu; shipped: "

    assert message =~ "config :ecs_peers, build_from_source: true"
    assert message =~ "mix deps.compile ecs_peers --force"

    # RustlerPrecompiled's own refusal (an unknown OS, an old NIF version) gets the recipe too.
    message =
      Loader.unsupported_target(
        {:error, "precompiled NIF is not available for this NIF version: \"2.14\"."}
      )

    assert message =~ "not available for this NIF version"
    assert message =~ "config :ecs_peers, build_from_source: true"
  end

  test "RustlerPrecompiled's cache: its environment variables, as it reads them" do
    env = fn vars -> &Map.get(vars, &1) end

    assert Loader.precompiled_cache_dir(env.(%{"RUSTLER_PRECOMPILED_GLOBAL_CACHE_PATH" => "/c"})) ==
             "/c"

    assert Loader.precompiled_cache_dir(env.(%{})) ==
             :filename.basedir(:user_cache, "rustler_precompiled/precompiled_nifs")

    assert Loader.precompiled_cache_dir(env.(%{"MIX_XDG" => "1"})) ==
             :filename.basedir(:user_cache, "rustler_precompiled/precompiled_nifs", %{os: :linux})
  end

  test "a cached tarball that no longer matches the checksum file is removed, naming it" do
    dir = Path.join(System.tmp_dir!(), "ecs_peers_cache_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)

    good = "libecs_peers_nif-v1.2.3-nif-2.15-x86_64-unknown-linux-gnu.so.tar.gz"
    bad = "libecs_peers_nif-v1.2.3-nif-2.15-aarch64-unknown-linux-gnu.so.tar.gz"
    # Another version, another package, and a tarball the checksum file does not list: not ours
    # to judge.
    others = [
      "libecs_peers_nif-v1.2.2-nif-2.15-aarch64-unknown-linux-gnu.so.tar.gz",
      "libexplorer-v0.10.0-nif-2.15-x86_64-unknown-linux-gnu.so.tar.gz",
      "libecs_peers_nif-v1.2.3-nif-2.16-x86_64-unknown-linux-gnu.so.tar.gz"
    ]

    for name <- [good, bad | others], do: File.write!(Path.join(dir, name), "tarball " <> name)
    sha = fn name -> :crypto.hash(:sha256, "tarball " <> name) |> Base.encode16(case: :lower) end

    checksums = %{
      good => "sha256:" <> String.upcase(sha.(good)),
      bad => "sha256:" <> sha.("something else"),
      Enum.at(others, 0) => "sha256:" <> sha.("something else")
    }

    assert [message] = Loader.drop_bad_cached(dir, checksums, "1.2.3")
    assert message =~ "removed #{Path.join(dir, bad)} from RustlerPrecompiled's cache"
    assert message =~ "It is downloaded again now."
    assert Enum.sort(File.ls!(dir)) == Enum.sort([good | others])
    # Nothing left to remove; a cache directory that does not exist yet is no error.
    assert Loader.drop_bad_cached(dir, checksums, "1.2.3") == []
    assert Loader.drop_bad_cached(Path.join(dir, "none"), checksums, "1.2.3") == []
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
