defmodule EcsPeers.Native.Loader do
  @moduledoc false
  # Chooses how the NIF is loaded, at compile time:
  # - RustlerPrecompiled (Hex users): a precompiled NIF for the platform, or a source build with
  #   ECS_PEERS_BUILD=1 (needs the rustler dependency and a Rust toolchain);
  # - otherwise (no Hex, e.g. this project's CI): the NIF cargo built, from priv/native or from
  #   ECS_PEERS_NIF_PATH.
  # Loading never takes the VM down: a missing NIF makes every EcsPeers call return an error.

  defmacro __using__(_) do
    if Code.ensure_loaded?(RustlerPrecompiled) and System.get_env("ECS_PEERS_NIF_PATH") == nil do
      version = Mix.Project.config()[:version]

      quote do
        use RustlerPrecompiled,
          otp_app: :ecs_peers,
          crate: "ecs_peers_nif",
          base_url:
            "https://github.com/ecs-peers/ecs-peers/releases/download/v#{unquote(version)}",
          force_build: System.get_env("ECS_PEERS_BUILD") in ["1", "true"],
          version: unquote(version),
          nif_versions: ["2.15"],
          targets: ~w(
            aarch64-apple-darwin x86_64-apple-darwin
            aarch64-unknown-linux-gnu x86_64-unknown-linux-gnu
            aarch64-unknown-linux-musl x86_64-unknown-linux-musl
          )
      end
    else
      quote do
        require Logger
        @on_load :load_nif

        @doc false
        def load_nif do
          path =
            System.get_env("ECS_PEERS_NIF_PATH") ||
              Path.join(:code.priv_dir(:ecs_peers), "native/libecs_peers_nif")

          case :erlang.load_nif(String.to_charlist(path), 0) do
            :ok ->
              :ok

            {:error, {:reload, _}} ->
              :ok

            {:error, reason} ->
              Logger.error("ecs_peers: cannot load the NIF from #{path}.so: #{inspect(reason)}")
              :ok
          end
        end
      end
    end
  end
end

defmodule EcsPeers.Native do
  @moduledoc false
  use EcsPeers.Native.Loader

  def start(_config, _this, _pid, _tag), do: :erlang.nif_error(:nif_not_loaded)
  def subscribe(_poller, _pid, _tag), do: :erlang.nif_error(:nif_not_loaded)
  def names(_nodes), do: :erlang.nif_error(:nif_not_loaded)
  def stop(_poller), do: :erlang.nif_error(:nif_not_loaded)
  def discover(_config, _this, _pid, _tag), do: :erlang.nif_error(:nif_not_loaded)
  def validate(_config, _this), do: :erlang.nif_error(:nif_not_loaded)
  def keys, do: :erlang.nif_error(:nif_not_loaded)
end
