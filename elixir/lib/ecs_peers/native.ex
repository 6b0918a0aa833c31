defmodule EcsPeers.Native.Loader do
  @moduledoc false
  # Where the NIF comes from, decided in two steps.
  #
  # When ecs_peers is compiled, the builder (`builder/1` names it for the hints):
  # - :precompiled: RustlerPrecompiled is available (a Hex install). It downloads the NIF for this
  #   platform and checks it against checksum-Elixir.EcsPeers.Native.exs. It builds from source
  #   with Rustler (:source) instead when `config :rustler_precompiled, :force_build, ecs_peers:
  #   true` (or `force_build_all`) is set, or when ECS_PEERS_BUILD=1 asks for it here.
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

  # Options for `use RustlerPrecompiled`. `:force_build` is passed only when ECS_PEERS_BUILD asks
  # for a source build: RustlerPrecompiled reads `config :rustler_precompiled, :force_build,
  # ecs_peers: true` only when the option is absent (Keyword.put_new in its __using__/1, v0.8.4),
  # so passing `force_build: false` would switch the documented setting off.
  def precompiled_options(version, ecs_peers_build) do
    opts = [
      otp_app: :ecs_peers,
      crate: "ecs_peers_nif",
      base_url: @base_url <> version,
      version: version,
      nif_versions: @nif_versions,
      targets: @targets
    ]

    if ecs_peers_build in ["1", "true"], do: opts ++ [force_build: true], else: opts
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
      "compiled: #{reason(reason)}. To build it from source instead (needs a Rust toolchain): " <>
      ~s(add {:rustler, "~> 0.36.0", optional: true} to your deps, set ) <>
      "`config :rustler_precompiled, :force_build, ecs_peers: true` (or ECS_PEERS_BUILD=1), " <>
      "then `mix deps.compile ecs_peers --force`; or set ECS_PEERS_NIF_PATH to a NIF you built."
  end

  def failure(:source, :default, reason) do
    "cannot load the NIF that Rustler built from source when ecs_peers was compiled: " <>
      "#{reason(reason)}. Rebuild it with `mix deps.compile ecs_peers --force` and read " <>
      "cargo's output; or set ECS_PEERS_NIF_PATH to a NIF you built."
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
    if Code.ensure_loaded?(RustlerPrecompiled) do
      opts =
        precompiled_options(Mix.Project.config()[:version], System.get_env("ECS_PEERS_BUILD"))

      quote do
        use RustlerPrecompiled, unquote(opts)
        @before_compile EcsPeers.Native.Loader
      end
    else
      quote do
        @before_compile EcsPeers.Native.Loader
      end
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
end
