# Scheduler latency added by EcsPeers.Strategy while it polls N ECS tasks (default 10,000).
#
# One probe process per scheduler asks for a 2 ms timer over and over and records how late it
# fires. Baseline: the `ecs-peers` CLI, outside the VM, polls the same tasks at the same interval,
# so the emulator (on the same 2 cores) is exactly as busy as later. Then the strategy polls them
# inside the VM every second (connect/disconnect MFAs that only record, so no real connections)
# and the probes run again: the difference is what running the poller in the VM costs the
# schedulers. Also times the NIF calls, which must return at once.
#
# Run: benches/scheduler_latency.sh [TASKS]
[endpoint, tasks, seconds, cli] = System.argv()
tasks = String.to_integer(tasks)
seconds = String.to_integer(seconds)

defmodule Probe do
  def run(ms) do
    parent = self()

    for s <- 1..System.schedulers_online() do
      Process.spawn(fn -> send(parent, {:lateness, loop(System.monotonic_time(:millisecond) + ms, [])}) end, [{:scheduler, s}])
    end

    for _ <- 1..System.schedulers_online(), reduce: [] do
      acc -> receive(do: ({:lateness, l} -> l ++ acc))
    end
    |> Enum.sort()
  end

  defp loop(deadline, acc) do
    if System.monotonic_time(:millisecond) >= deadline do
      acc
    else
      t0 = System.monotonic_time(:microsecond)
      Process.send_after(self(), :tick, 2)
      receive do: (:tick -> :ok)
      loop(deadline, [System.monotonic_time(:microsecond) - t0 - 2_000 | acc])
    end
  end

  def pct(sorted, p), do: Enum.at(sorted, min(length(sorted) - 1, trunc(length(sorted) * p)))

  def summary(sorted) do
    "p50 #{pct(sorted, 0.50)} µs, p99 #{pct(sorted, 0.99)} µs, p99.9 #{pct(sorted, 0.999)} µs, max #{List.last(sorted)} µs (#{length(sorted)} samples)"
  end
end

config = [
  node_basename: "app",
  endpoint_url: endpoint,
  polling_interval: 1_000,
  poll_timeout: 60_000,
  max_attempts: 1,
  sources: [[type: :ecs, region: "eu-west-2", cluster: "big", service: "api"]]
]

timed = fn f ->
  t0 = System.monotonic_time(:microsecond)
  r = f.()
  {System.monotonic_time(:microsecond) - t0, r}
end

# The app supervises what the strategy registers with (the status registry, the sharing scope).
{:ok, _} = Application.ensure_all_started(:ecs_peers)
# The strategy's poll counter, read from its state: EcsPeers.status/1 would cost the process
# (10,000 peer names) inside the windows where its reductions and collections are counted.
polled = fn pid -> :sys.get_state(pid).last.poll end

{load_us, _} = timed.(fn -> Code.ensure_loaded!(EcsPeers.Native) end)
IO.puts("loading EcsPeers.Native (dlopen, runtime threads; once per VM, at boot in a release): #{load_us} µs")
[first | rest] = for _ <- 1..100, do: elem(timed.(fn -> {:ok, _} = EcsPeers.validate(config) end), 0)
rest = Enum.sort(rest)
IO.puts("NIF validate/1: first call #{first} µs, then median #{Enum.at(rest, 49)} µs, max #{List.last(rest)} µs (99 calls)")

load =
  Port.open(
    {:spawn,
     "#{cli} watch --ecs eu-west-2/big/api --basename app --endpoint-url #{endpoint} --interval 1s --timeout 60s --max-attempts 1 >/dev/null 2>&1"},
    [:binary]
  )

{:os_pid, load_pid} = Port.info(load, :os_pid)
# Let the CLI finish its first (describe-everything) poll before measuring.
Process.sleep(30_000)
baseline = Probe.run(seconds * 1_000)
System.cmd("kill", [Integer.to_string(load_pid)])
IO.puts("baseline (the CLI polls, outside the VM): " <> Probe.summary(baseline))

sink = spawn(fn -> Stream.repeatedly(fn -> receive(do: (_ -> :ok)) end) |> Stream.run() end)
rec = EcsPeers.Test.Recorder.start(sink)

state = %Cluster.Strategy.State{
  topology: :bench,
  config: config,
  connect: {EcsPeers.Test.Recorder, :connect, [rec, true]},
  disconnect: {EcsPeers.Test.Recorder, :disconnect, [rec]},
  list_nodes: {EcsPeers.Test.Recorder, :list_nodes, [rec]}
}

{start_us, {:ok, pid}} = timed.(fn -> EcsPeers.Strategy.start_link([state]) end)
IO.puts("strategy start (NIF start/3 inside): #{start_us} µs")

# Wait for the first complete poll (it describes every task once).
t0 = System.monotonic_time(:millisecond)

Stream.repeatedly(fn -> Process.sleep(200) end)
|> Enum.find(fn _ -> Agent.get(rec.agent, &MapSet.size/1) >= tasks end)

IO.puts("first poll connected #{tasks} peers after #{System.monotonic_time(:millisecond) - t0} ms")

polls_before = polled.(pid)
during = Probe.run(seconds * 1_000)
polls = polled.(pid) - polls_before
IO.puts("the strategy polls inside the VM:         " <> Probe.summary(during) <> ", #{polls} polls")

added = fn p -> Probe.pct(during, p) - Probe.pct(baseline, p) end
IO.puts("added latency: p50 #{added.(0.5)} µs, p99 #{added.(0.99)} µs, p99.9 #{added.(0.999)} µs")

# Less sensitive to other load on the machine than timer lateness: what each poll costs in CPU
# time on the NIF's runtime threads (taken from the schedulers' cores), and how long the strategy
# process's garbage collections take (not preemptible).
nif_cpu_ms = fn ->
  {:ok, tasks_dir} = File.ls("/proc/self/task")

  ticks =
    for t <- tasks_dir,
        String.trim(File.read!("/proc/self/task/#{t}/comm")) == "ecs-peers",
        reduce: 0 do
      acc ->
        # utime and stime: fields 14 and 15 of stat, after the parenthesised comm.
        [_, rest] = String.split(File.read!("/proc/self/task/#{t}/stat"), ") ", parts: 2)
        fields = String.split(rest)
        acc + String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))
    end

  ticks * 10
end

{reductions_before, _} = {Process.info(pid, :reductions) |> elem(1), nil}
p0 = polled.(pid)
cpu0 = nif_cpu_ms.()
:erlang.trace(pid, true, [:garbage_collection, :monotonic_timestamp])

gcs = fn gcs, until, open, acc ->
  left = until - System.monotonic_time(:millisecond)

  receive do
    {:trace_ts, ^pid, start, _, t} when start in [:gc_minor_start, :gc_major_start] ->
      gcs.(gcs, until, t, acc)

    {:trace_ts, ^pid, stop, _, t} when stop in [:gc_minor_end, :gc_major_end] and open != nil ->
      gcs.(gcs, until, nil, [System.convert_time_unit(t - open, :native, :microsecond) | acc])

    {:trace_ts, _, _, _, _} ->
      gcs.(gcs, until, open, acc)
  after
    max(left, 0) -> acc
  end
end

pauses = gcs.(gcs, System.monotonic_time(:millisecond) + 10_000, nil, [])
:erlang.trace(pid, false, [:garbage_collection])
polls = max(polled.(pid) - p0, 1)
reductions = (Process.info(pid, :reductions) |> elem(1)) - reductions_before
IO.puts("strategy process: #{div(reductions, polls)} reductions per poll of #{tasks} unchanged peers")

IO.puts(
  "NIF runtime threads: #{div(nif_cpu_ms.() - cpu0, polls)} ms of CPU per poll (10 ms ticks); " <>
    "strategy GCs: #{length(pauses)} in #{polls} polls, longest #{Enum.max(pauses, fn -> 0 end)} µs, " <>
    "total #{div(Enum.sum(pauses), polls)} µs per poll"
)

GenServer.stop(pid)
