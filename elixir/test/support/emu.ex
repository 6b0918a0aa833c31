defmodule EcsPeers.Test.Emu do
  @moduledoc false
  # awsemu (tests/awsemu: moto made faithful to ECS, EC2 and Cloud Map, with fault injection) for
  # ExUnit: started once per suite on a free loopback port with its one start command,
  # tests/awsemu/run; tests build their own worlds in it (their own cluster names, and their own
  # region when they inject faults). Seeding goes through the real AWS APIs (tests/support/world.py).

  @root Path.expand("../../..", __DIR__)
  @holder __MODULE__.Holder

  @doc false
  # Called by test_helper.exs: the holder of the one emulator of this run (started by the first
  # test that needs it), stopped when the run ends.
  def init do
    {:ok, _} = Agent.start(fn -> nil end, name: @holder)

    System.at_exit(fn _ ->
      case Agent.get(@holder, & &1) do
        nil -> :ok
        emu -> stop(emu)
      end
    end)
  end

  @doc """
  The emulator of this run, started on first use. Only tests tagged :emulator may use it: with
  `--exclude emulator` (the quick tier) this raises, naming the fix.
  """
  def shared do
    if :emulator in Keyword.get(ExUnit.configuration(), :exclude, []) do
      raise "this test uses the AWS emulator: tag it @moduletag :emulator (or @tag :emulator), " <>
              "so the quick tier (mix test --exclude emulator) leaves it out"
    end

    # The NIF reads the OS environment, which System.put_env/2 does not change (OTP keeps its
    # own copy), so the credentials for the emulator must be exported before the VM starts.
    for var <- ~w(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY), System.get_env(var) in [nil, ""] do
      raise "export #{var}=test (any value; the tests talk to a local AWS emulator), or run ../scripts/test"
    end

    Agent.get_and_update(
      @holder,
      fn
        nil ->
          emu = start()
          {emu, emu}

        emu ->
          {emu, emu}
      end,
      :infinity
    )
  end

  def start do
    python = Path.join(@root, ".venv-awsemu/bin/python")
    {:ok, sock} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(sock)
    :gen_tcp.close(sock)

    run = Path.join(@root, "tests/awsemu/run")
    command = "#{sh(run)} -H 127.0.0.1 -p #{port} >/dev/null 2>&1"
    os_port = Port.open({:spawn, command}, [:binary, :exit_status])

    {:os_pid, os_pid} = Port.info(os_port, :os_pid)
    emu = %{port: port, endpoint: "http://127.0.0.1:#{port}", os_pid: os_pid, python: python}
    :ok = wait_ready(emu, 300)
    emu
  end

  defp sh(arg), do: "'" <> String.replace(arg, "'", "'\\''") <> "'"

  def stop(%{os_pid: pid}), do: System.cmd("kill", [Integer.to_string(pid)])

  defp wait_ready(_emu, 0), do: {:error, :awsemu_did_not_start}

  defp wait_ready(emu, n) do
    case http(emu, :get, "/moto-api/") do
      {:ok, 200, _} ->
        :ok

      _ ->
        Process.sleep(100)
        wait_ready(emu, n - 1)
    end
  end

  def seed(emu, spec), do: world(emu, "seed", spec)

  def stop_tasks(emu, region, cluster, arns),
    do: world(emu, "stop", %{region: region, cluster: cluster, tasks: arns})

  def run_tasks(emu, spec), do: world(emu, "run", spec)

  # tests/support/world.py ENDPOINT cmd spec: seed, run, stop, instances, lifecycle, health, config.
  def world(emu, cmd, spec) do
    script = Path.join(@root, "tests/support/world.py")

    {out, 0} =
      System.cmd(emu.python, [script, emu.endpoint, cmd, json(spec)],
        env: [{"WORLD_OUTPUT", "erlang"}]
      )

    decode(out)
  end

  def fault(emu, spec), do: {:ok, 200, _} = http(emu, :post, "/_fault", json(spec))
  def clear_faults(emu), do: http(emu, :delete, "/_fault")

  # The emulator's fault list with hit counts. OTP 25 has no JSON decoder; the list holds flat
  # objects of strings, numbers and null, which this small reader handles.
  def faults(emu) do
    {:ok, 200, body} = http(emu, :get, "/_fault")

    Regex.scan(~r/\{[^{}]*\}/, body)
    |> Enum.map(fn [obj] ->
      Regex.scan(~r/"(\w+)":\s*("[^"]*"|-?\d+|null|true|false)/, obj)
      |> Map.new(fn [_, k, v] ->
        {k, if(String.starts_with?(v, "\""), do: String.trim(v, "\""), else: parse(v))}
      end)
    end)
  end

  defp parse("null"), do: nil
  defp parse("true"), do: true
  defp parse("false"), do: false
  defp parse(n), do: String.to_integer(n)

  defp http(emu, method, path, body \\ nil) do
    url = String.to_charlist(emu.endpoint <> path)
    request = if body, do: {url, [], ~c"application/json", body}, else: {url, []}

    case :httpc.request(method, request, [timeout: 5_000], body_format: :binary) do
      {:ok, {{_, status, _}, _headers, resp}} -> {:ok, status, resp}
      other -> other
    end
  end

  # Minimal JSON for the test specs (maps, lists, strings, numbers, booleans).
  def json(m) when is_map(m),
    do: "{" <> Enum.map_join(m, ",", fn {k, v} -> json(to_string(k)) <> ":" <> json(v) end) <> "}"

  def json(l) when is_list(l), do: "[" <> Enum.map_join(l, ",", &json/1) <> "]"
  def json(s) when is_binary(s), do: inspect(s, printable_limit: :infinity)
  def json(a) when is_atom(a) and a not in [true, false, nil], do: json(Atom.to_string(a))
  def json(nil), do: "null"
  def json(x), do: to_string(x)

  defp decode(out) do
    {:ok, tokens, _} = out |> String.to_charlist() |> :erl_scan.string()
    {:ok, value} = :erl_parse.parse_term(tokens)
    value
  end
end
