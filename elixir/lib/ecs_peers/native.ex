defmodule EcsPeers.Native.Loader do
  @moduledoc false
  # Where the NIF comes from, decided in two steps.
  #
  # When ecs_peers is compiled, the builder (`builder/1` names it for the hints):
  # - :precompiled: RustlerPrecompiled is available (a Hex install). It downloads the NIF for this
  #   platform and checks it against checksum-Elixir.EcsPeers.Native.exs. Before it runs, a
  #   platform with no precompiled NIF is refused with the source build's recipe, and a cached
  #   tarball that no longer matches the checksum file is removed (RustlerPrecompiled would
  #   refuse it on every compile and never download it again).
  # - :source: built from source with Rustler, through RustlerPrecompiled's force_build, when
  #   `config :ecs_peers, build_from_source: true` is set (read with compile_env, so the choice
  #   is remembered by every later compile, and a change without a recompile is refused at boot
  #   by Elixir naming `mix deps.compile ecs_peers --force`), or for one compile when
  #   ECS_PEERS_BUILD=1 is set (a notice then says how to keep it). RustlerPrecompiled's own
  #   `config :rustler_precompiled, :force_build, ecs_peers: true` works too.
  # - :cargo: no RustlerPrecompiled (ECS_PEERS_OFFLINE=1, this project's CI): the NIF cargo built,
  #   copied to priv/native/libecs_peers_nif.so.
  #
  # When the module is loaded (run time): ECS_PEERS_NIF_PATH, when set, names the library to load
  # instead, with or without its `.so`, whatever the builder was.
  #
  # Loading never takes the VM down: a NIF that does not load is logged, and every EcsPeers call
  # then returns `{:error, message}` with the reason and the fix for the builder in use.

  require Logger

  # The precompiled NIFs, one per target and NIF version; scripts/release-nif builds these and
  # scripts/package-hex refuses a package without a checksum for each. Keep one target per line.
  @targets ~w(
    aarch64-apple-darwin
    x86_64-apple-darwin
    aarch64-unknown-linux-gnu
    x86_64-unknown-linux-gnu
    aarch64-unknown-linux-musl
    x86_64-unknown-linux-musl
  )
  @nif_versions ~w(2.15)

  @base_url "https://github.com/ecs-peers/ecs-peers/releases/download/v"
  @error_key {__MODULE__, :load_error}

  def targets, do: @targets
  def nif_versions, do: @nif_versions

  # Whether this compile builds the NIF from source, and who asked: `:config` (`config
  # :ecs_peers, build_from_source: true`, remembered), `:env` (ECS_PEERS_BUILD=1 for this
  # compile only), or nil (download the precompiled NIF).
  def source_build(configured, ecs_peers_build) do
    cond do
      configured == true -> :config
      configured not in [false, nil] -> raise ArgumentError, bad_build_from_source(configured)
      ecs_peers_build in ["1", "true"] -> :env
      true -> nil
    end
  end

  defp bad_build_from_source(value) do
    "config :ecs_peers, build_from_source: #{inspect(value)}: expected true or false " <>
      "(true builds the NIF from source with Rustler instead of downloading it)"
  end

  # Options for `use RustlerPrecompiled`. `:force_build` is passed only for a source build:
  # RustlerPrecompiled reads `config :rustler_precompiled, :force_build, ecs_peers: true` only
  # when the option is absent (Keyword.put_new in its __using__/1, v0.8.0 to v0.8.4), so passing
  # `force_build: false` would switch that documented setting off.
  def precompiled_options(version, source_build) do
    opts = [
      otp_app: :ecs_peers,
      crate: "ecs_peers_nif",
      base_url: @base_url <> version,
      version: version,
      nif_versions: @nif_versions,
      targets: @targets
    ]

    if source_build, do: opts ++ [force_build: true], else: opts
  end

  # What a source build costs, measured (docs/installation.md, BENCHMARKS.md): quoted by every
  # message that proposes one.
  @build_time "about 20 CPU-minutes and up to 8 GB of memory the first time, 10 to 20 " <>
                "minutes on 2 cores; under a minute after that with a kept target_dir"

  # The source build's recipe, as every message of ours gives it.
  def source_build_recipe do
    ~s(add {:rustler, "~> 0.36.0", optional: true} to your deps and ) <>
      "`config :ecs_peers, build_from_source: true` to config/config.exs, then run " <>
      "`mix deps.compile ecs_peers --force` (needs Rust 1.94 or later; #{@build_time}: " <>
      "`config :ecs_peers, EcsPeers.Native, target_dir: \"/a/kept/dir\"` keeps cargo's " <>
      "build across forced recompiles)"
  end

  # Printed when ECS_PEERS_BUILD=1 chose the source build: the variable is not remembered.
  def env_build_notice do
    "ecs_peers: building the NIF from source because ECS_PEERS_BUILD=1 is set for this " <>
      "compile (#{@build_time}). The choice is not remembered: a later recompile of ecs_peers " <>
      "without the variable downloads the precompiled NIF again. To keep building from " <>
      "source, add `config :ecs_peers, build_from_source: true` to config/config.exs."
  end

  # Printed when build_from_source is set in a copy compiled without RustlerPrecompiled.
  def offline_build_notice do
    "ecs_peers: build_from_source is ignored: this copy compiles without RustlerPrecompiled " <>
      "(ECS_PEERS_OFFLINE=1) and loads the NIF cargo built from priv/native."
  end

  # A source build without Rustler: RustlerPrecompiled would ask for `{:rustler, ">= 0.0.0"}`,
  # which resolves to a rustler that fails on Elixir 1.14 (see mix.exs).
  def rustler_missing(source_build) do
    why =
      case source_build do
        :config -> "`config :ecs_peers, build_from_source: true` is set"
        :env -> "ECS_PEERS_BUILD=1 is set"
        :rustler_precompiled -> "RustlerPrecompiled's force_build is set"
      end

    "ecs_peers: the NIF is to be built from source (#{why}), but Rustler is not a " <>
      ~s(dependency: add {:rustler, "~> 0.36.0", optional: true} to your deps, run ) <>
      "`mix deps.get`, then `mix deps.compile ecs_peers --force`."
  end

  # A platform RustlerPrecompiled names (`nif-<version>-<target>`, from its public target/0,
  # which also reads TARGET_ARCH and the like) for which no NIF is shipped: nil when there is
  # one, else the message with the source build's recipe.
  def unsupported_target({:ok, "nif-" <> nif_target}) do
    [_nif_version, target] = String.split(nif_target, "-", parts: 2)

    if target in @targets do
      nil
    else
      "ecs_peers ships no precompiled NIF for this platform (#{target}; shipped: " <>
        "#{Enum.join(@targets, ", ")}). Build it from source: #{source_build_recipe()}."
    end
  end

  def unsupported_target({:error, reason}) do
    "ecs_peers has no precompiled NIF for this platform: #{reason}\n" <>
      "Build it from source: #{source_build_recipe()}."
  end

  # Where RustlerPrecompiled (v0.8.0 to v0.8.4, its private cache_dir/1) keeps the tarballs it
  # downloaded: RUSTLER_PRECOMPILED_GLOBAL_CACHE_PATH itself when set, else the user cache
  # directory's rustler_precompiled/precompiled_nifs (~/.cache/... on Linux, following
  # XDG_CACHE_HOME; ~/Library/Caches/... on macOS; Linux's layout everywhere when MIX_XDG is
  # set). Named in messages, and searched for tarballs that no longer match the checksum file.
  def precompiled_cache_dir(get_env \\ &System.get_env/1) do
    case get_env.("RUSTLER_PRECOMPILED_GLOBAL_CACHE_PATH") do
      path when path not in [nil, ""] ->
        path

      _ ->
        opts = if get_env.("MIX_XDG"), do: %{os: :linux}, else: %{}
        :filename.basedir(:user_cache, "rustler_precompiled/precompiled_nifs", opts)
    end
  end

  # Removes this version's tarballs in `dir` whose sha256 is not the one `checksums` (the map of
  # checksum-Elixir.EcsPeers.Native.exs) lists: RustlerPrecompiled checks a cached tarball
  # before using it, fails the compile when it does not match, and never downloads it again
  # while the file is there. Returns the messages for the files removed.
  def drop_bad_cached(dir, checksums, version) do
    prefix = "libecs_peers_nif-v#{version}-"

    for name <- File.ls!(dir),
        String.starts_with?(name, prefix),
        path <- [Path.join(dir, name)],
        "sha256:" <> expected <- [Map.get(checksums, name)],
        sha256(path) != String.downcase(expected) do
      File.rm!(path)

      "ecs_peers: removed #{path} from RustlerPrecompiled's cache: its sha256 is not the one " <>
        "checksum-Elixir.EcsPeers.Native.exs lists (a broken or altered download), and " <>
        "RustlerPrecompiled would refuse it on every compile. It is downloaded again now."
    end
  rescue
    File.Error -> []
  end

  defp sha256(path) do
    :crypto.hash(:sha256, File.read!(path)) |> Base.encode16(case: :lower)
  end

  # The library `:erlang.load_nif/2` is given for ECS_PEERS_NIF_PATH: nil when the variable is
  # unset or empty. load_nif/2 appends the platform's extension itself (`.so`, also on macOS;
  # `.dll` on Windows), so a path given with that extension loses it.
  def nif_path(nil), do: nil
  def nif_path(""), do: nil

  def nif_path(path) do
    ext = if match?({:win32, _}, :os.type()), do: ".dll", else: ".so"
    if String.ends_with?(path, ext), do: String.trim_trailing(path, ext), else: path
  end

  # The @on_load of EcsPeers.Native. `load_fun` runs inside EcsPeers.Native (load_nif/2 must be
  # called from the NIF's own module): `load_fun.({:path, charlist})` loads a given library,
  # `load_fun.(:default)` runs the builder's own loader. Always `:ok`, so the module loads.
  def load(builder, load_fun, env_value \\ System.get_env("ECS_PEERS_NIF_PATH")) do
    {from, result} =
      case nif_path(env_value) do
        nil -> {:default, load_fun.(:default)}
        path -> {{:env, env_value, path}, load_fun.({:path, String.to_charlist(path)})}
      end

    case result do
      :ok ->
        loaded()

      {:error, {:reload, _}} ->
        loaded()

      {:error, reason} ->
        fail(failure(builder, from, reason))
    end
  rescue
    e -> fail(failure(builder, :default, Exception.message(e)))
  end

  defp loaded do
    :persistent_term.erase(@error_key)
    :ok
  end

  defp fail(message) do
    :persistent_term.put(@error_key, message)
    Logger.error("ecs_peers: " <> message)
    :ok
  end

  # Why the NIF is not loaded, with the fix, as recorded when EcsPeers.Native was loaded.
  def why(builder) do
    case :persistent_term.get(@error_key, nil) do
      nil -> failure(builder, :default, "it was not loaded")
      message -> message
    end
  end

  # The message for a NIF that did not load: what was tried, the reason, and a fix that works
  # for the builder this copy of ecs_peers was compiled with.
  def failure(builder, {:env, value, path}, reason) do
    "cannot load the NIF from ECS_PEERS_NIF_PATH=#{value} (#{path}.so): #{reason(reason)}. " <>
      "Set ECS_PEERS_NIF_PATH to the libecs_peers_nif.so that `cargo build -p ecs_peers_nif` " <>
      "writes (with or without .so), or unset it to load #{default_nif(builder)}."
  end

  def failure(:precompiled, :default, reason) do
    "cannot load the precompiled NIF that RustlerPrecompiled downloaded when ecs_peers was " <>
      "compiled (its tarball is kept in #{precompiled_cache_dir()}): #{reason(reason)}. " <>
      "To build it from source instead: #{source_build_recipe()}. Or set ECS_PEERS_NIF_PATH " <>
      "to a NIF you built."
  end

  def failure(:source, :default, reason) do
    "cannot load the NIF that Rustler built from source when ecs_peers was compiled: " <>
      "#{reason(reason)}. Rebuild it with `mix deps.compile ecs_peers --force` and read " <>
      "cargo's output (#{@build_time}); or set ECS_PEERS_NIF_PATH to a NIF you built."
  end

  def failure(:cargo, :default, reason) do
    "cannot load the NIF from #{cargo_nif()}.so: #{reason(reason)}. This copy of ecs_peers " <>
      "was compiled without RustlerPrecompiled (ECS_PEERS_OFFLINE=1), so nothing downloads or " <>
      "builds the NIF: run `cargo build -p ecs_peers_nif` and copy " <>
      "target/debug/libecs_peers_nif.so to priv/native/ (scripts/lib.sh build_nif does both), " <>
      "or set ECS_PEERS_NIF_PATH to it."
  end

  defp default_nif(:precompiled), do: "the precompiled NIF"
  defp default_nif(:source), do: "the NIF Rustler built from source"
  defp default_nif(:cargo), do: "priv/native/libecs_peers_nif.so"

  defp reason({_kind, text}) when is_list(text), do: List.to_string(text)
  defp reason(text) when is_binary(text), do: text
  defp reason(other), do: inspect(other)

  # The library the :cargo builder loads (without its extension).
  def cargo_nif do
    case :code.priv_dir(:ecs_peers) do
      {:error, _} -> "priv/native/libecs_peers_nif"
      dir -> Path.join(List.to_string(dir), "native/libecs_peers_nif")
    end
  end

  # The builder a `use RustlerPrecompiled` chose, from the @on_load it registered: Rustler's
  # rustler_init for a source build (force_build), else RustlerPrecompiled's own loader.
  def builder(nil), do: :cargo
  def builder({:rustler_init, 0}), do: :source
  def builder({_fun, 0}), do: :precompiled

  defmacro __using__(_) do
    configured = Application.compile_env(__CALLER__, :ecs_peers, :build_from_source, false)
    source_build = source_build(configured, System.get_env("ECS_PEERS_BUILD"))

    if Code.ensure_loaded?(RustlerPrecompiled) do
      version = Mix.Project.config()[:version]
      checks = prepare(source_build, version)
      opts = precompiled_options(version, source_build)

      quote do
        unquote(checks)
        use RustlerPrecompiled, unquote(opts)
        @before_compile EcsPeers.Native.Loader
      end
    else
      if source_build == :config, do: Mix.shell().info(offline_build_notice())

      quote do
        @before_compile EcsPeers.Native.Loader
      end
    end
  end

  # Before RustlerPrecompiled runs: our message instead of its own where ours names the fix.
  # Nothing to check when RustlerPrecompiled's own switches build from source (it reads and
  # tracks them itself).
  defp prepare(nil, version) do
    forced =
      forced_by_rustler_precompiled?(
        Application.get_all_env(:rustler_precompiled),
        System.get_env("RUSTLER_PRECOMPILED_FORCE_BUILD_ALL")
      )

    cond do
      # Run in EcsPeers.Native's body, the only code compiled only where RustlerPrecompiled
      # exists.
      not forced ->
        quote do
          EcsPeers.Native.Loader.check_download(RustlerPrecompiled.target(), unquote(version))
        end

      not Code.ensure_loaded?(Rustler) ->
        raise rustler_missing(:rustler_precompiled)

      true ->
        nil
    end
  end

  defp prepare(source_build, _version) do
    unless Code.ensure_loaded?(Rustler), do: raise(rustler_missing(source_build))
    if source_build == :env, do: Mix.shell().info(env_build_notice())
    nil
  end

  # RustlerPrecompiled's switches for a source build (v0.8.0 to v0.8.4, its __using__/1):
  # `config :rustler_precompiled, :force_build, ecs_peers: true`, `force_build_all: true`, or
  # RUSTLER_PRECOMPILED_FORCE_BUILD_ALL=1 when force_build_all is not configured.
  def forced_by_rustler_precompiled?(app_env, force_build_all_env) do
    all = Keyword.get(app_env, :force_build_all, force_build_all_env in ["1", "true"])
    per_app = Keyword.get(app_env, :force_build, [])
    all == true or (Keyword.keyword?(per_app) and per_app[:ecs_peers] == true)
  end

  # Before a download: `target` is RustlerPrecompiled.target/0's answer for this machine.
  def check_download(target, version) do
    if message = unsupported_target(target), do: raise(message)

    # The file RustlerPrecompiled checks against, at the package's root.
    file = Path.expand("../../checksum-Elixir.EcsPeers.Native.exs", __DIR__)

    checksums =
      with true <- File.exists?(file), {map, _} when is_map(map) <- Code.eval_file(file) do
        map
      else
        _ -> %{}
      end

    for message <- drop_bad_cached(precompiled_cache_dir(), checksums, version) do
      Mix.shell().info(message)
    end
  end

  # Runs after RustlerPrecompiled (and Rustler's own before_compile) registered their @on_load:
  # that loader becomes the default, and ECS_PEERS_NIF_PATH is checked first, at load time.
  defmacro __before_compile__(env) do
    registered = Module.get_attribute(env.module, :on_load)
    builder = builder(registered)

    default =
      case registered do
        nil ->
          quote do
            :erlang.load_nif(String.to_charlist(EcsPeers.Native.Loader.cargo_nif()), 0)
          end

        {fun, 0} ->
          Module.delete_attribute(env.module, :on_load)
          quote do: unquote(fun)()
      end

    quote do
      @on_load :load_ecs_peers_nif

      @doc false
      def load_ecs_peers_nif do
        EcsPeers.Native.Loader.load(unquote(builder), fn
          {:path, path} -> :erlang.load_nif(path, 0)
          :default -> unquote(default)
        end)
      end

      @doc false
      def builder, do: unquote(builder)
    end
  end
end

defmodule EcsPeers.Native do
  @moduledoc false
  # The NIF (native/ecs_peers_nif). Its functions return at once; what waits runs on the NIF's
  # own threads and answers by message. See native/ecs_peers_nif/src/lib.rs for the list.
  use EcsPeers.Native.Loader

  # A validated configuration for this node: {:ok, {config, settings}} | {:error, message}.
  def config(_config, _this), do: :erlang.nif_error(:nif_not_loaded)
  # Polls with a validated config; updates go to pid as {:ecs_peers, tag, {:update, update}}.
  def start(_config, _pid, _tag), do: :erlang.nif_error(:nif_not_loaded)
  def stop(_poller), do: :erlang.nif_error(:nif_not_loaded)
  # One poll; the snapshot goes to pid as {:ecs_peers, tag, {:discovered, snapshot}}.
  def discover(_config, _pid, _tag), do: :erlang.nif_error(:nif_not_loaded)
  # An update's handles: {:ok, [node()]} and {:ok, [{node(), ip_tuple, port | nil}]}.
  def nodes(_handle), do: :erlang.nif_error(:nif_not_loaded)
  def dial(_handle), do: :erlang.nif_error(:nif_not_loaded)
  # The field names the NIF encodes %EcsPeers.Update{} with (EcsPeers.Update.check_nif/0).
  def update_fields, do: :erlang.nif_error(:nif_not_loaded)
  def keys, do: :erlang.nif_error(:nif_not_loaded)
  # This task's node name by the core's rule (EcsPeers.Release, the boot step).
  def this_node(_basename), do: :erlang.nif_error(:nif_not_loaded)

  # TLS distribution: this task's certificate from the cluster CA (native/ecs_peers_nif/src/tls.rs).
  def tls_credentials(_config), do: :erlang.nif_error(:nif_not_loaded)
  # Fleet-shared polling: the sharing group's members (node-name binaries, this node
  # included), and a result another member polled (`from`: its node name as a binary).
  def share(_poller, _members), do: :erlang.nif_error(:nif_not_loaded)
  def receive_shared(_poller, _from, _result), do: :erlang.nif_error(:nif_not_loaded)
  # The doctor's checks of one peer the poller listed (`node`: its name as a binary), with
  # `cookie` (a binary or nil) and `epmd_less`: {:ok, :ok} at once, then
  # {:ecs_peers, tag, {:diagnosis, node, {:ok, diagnosis} | {:error, message}}} to pid.
  def diagnose(_poller, _node, _cookie, _epmd_less, _pid, _tag),
    do: :erlang.nif_error(:nif_not_loaded)
end
