defmodule EcsPeers.Test.EpmdNode do
  @moduledoc false
  # A real BEAM node as an OS process (`elixir --name ...`), started with the EPMD-less
  # distribution (-start_epmd false -epmd_module Elixir.EcsPeers.Epmd) and this package's ebin on
  # the code path from the first instruction (distribution starts before any -pa given to
  # elixir itself is applied). The test VM stays non-distributed and drives the node through its
  # stdin: each request is Elixir code (base64, one line); the node answers `RESULT <base64
  # term>`. Every wait has a timeout; nothing sleeps.

  @agent ~S"""
  IO.puts("READY " <> Atom.to_string(node()))
  serve = fn serve ->
    case IO.gets("") do
      :eof -> System.halt(0)
      line ->
        result =
          try do
            line |> String.trim() |> Base.decode64!() |> Code.eval_string() |> elem(0)
          rescue
            e -> {:raised, Exception.message(e)}
          end
        IO.puts("RESULT " <> Base.encode64(:erlang.term_to_binary(result)))
        serve.(serve)
    end
  end
  serve.(serve)
  """

  @doc "A TCP port that was free a moment ago (for a node to listen on)."
  def free_port(ip \\ {127, 0, 0, 1}) do
    {:ok, socket} = :gen_tcp.listen(0, ip: ip, reuseaddr: true)
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end

  @doc """
  Starts `name` with `env` (a list of {VAR, value}); options: `hidden: true`, `erl: "flags"`,
  `timeout:` (ms to wait until it is up). Returns `{:ok, node}` or `{:error, output}` when the VM
  exits before it is up (its output, for the test to inspect).
  """
  def start(name, env, opts \\ []) do
    ebin = Path.dirname(:code.which(EcsPeers.Epmd))
    erl = "-start_epmd false -epmd_module Elixir.EcsPeers.Epmd -pa #{ebin} #{opts[:erl]}"
    hidden = if opts[:hidden], do: ["--hidden"], else: []
    args = ["--name", name] ++ hidden ++ ["--erl", erl, "-e", @agent]
    # No crash dump file when a node refuses to boot (the configuration-error tests).
    env = [{"ERL_CRASH_DUMP_SECONDS", "0"} | env]

    port =
      Port.open({:spawn_executable, System.find_executable("elixir")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 1_000_000},
        args: args,
        env: Enum.map(env, fn {k, v} -> {String.to_charlist(k), String.to_charlist(v)} end)
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    node = %{name: String.to_atom(name), port: port, os_pid: os_pid}
    deadline = System.monotonic_time(:millisecond) + Keyword.get(opts, :timeout, 20_000)

    case await_line(node, "READY ", deadline, []) do
      {:ok, _line} -> {:ok, node}
      {:error, output} -> {:error, output}
    end
  end

  @doc "Evaluates `code` (Elixir source) on the node and returns its value."
  def eval(node, code, timeout \\ 15_000) do
    Port.command(node.port, Base.encode64(code) <> "\n")
    deadline = System.monotonic_time(:millisecond) + timeout

    case await_line(node, "RESULT ", deadline, []) do
      {:ok, "RESULT " <> data} -> data |> Base.decode64!() |> :erlang.binary_to_term()
      {:error, output} -> raise "#{node.name} did not answer #{inspect(code)}:\n#{output}"
    end
  end

  def stop(%{port: port, os_pid: os_pid}) do
    if Port.info(port) != nil, do: Port.close(port)
    # The VM halts on end of input; make sure of it (this pid is the VM this module started).
    System.cmd("kill", ["-9", Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end

  defp await_line(node, prefix, deadline, seen) do
    wait = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {port, {:data, {:eol, line}}} when port == node.port ->
        if String.starts_with?(line, prefix),
          do: {:ok, line},
          else: await_line(node, prefix, deadline, [line | seen])

      {port, {:data, {:noeol, part}}} when port == node.port ->
        await_line(node, prefix, deadline, [part | seen])

      {port, {:exit_status, status}} when port == node.port ->
        {:error, Enum.join(Enum.reverse(["(exit status #{status})" | seen]), "\n")}
    after
      wait -> {:error, Enum.join(Enum.reverse(["(no #{prefix}within the timeout)" | seen]), "\n")}
    end
  end
end
