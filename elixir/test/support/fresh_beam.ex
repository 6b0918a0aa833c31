defmodule EcsPeers.Test.FreshBeam do
  @moduledoc false
  # A new BEAM with this build's modules and the given environment: what EcsPeers.validate/1
  # answers there (so the NIF is loaded the way a booting application loads it).

  @config ~s([node_basename: "app", sources: [[type: :ecs, region: "eu-west-2", cluster: "web"]]])

  def validate(env) do
    ebin = Path.dirname(:code.which(EcsPeers))

    script = """
    case EcsPeers.validate(#{@config}) do
      {:ok, timings} -> IO.puts("VALIDATED " <> inspect(timings))
      {:error, message} -> IO.puts("ERROR " <> message)
    end
    """

    {out, 0} = System.cmd("elixir", ["-pa", ebin, "-e", script], env: env, stderr_to_stdout: true)
    out
  end
end
