"""TLS distribution against TCP between two BEAM nodes in the e2e bed's task namespaces (two
hosts on the VPC bridge, not loopback), in one run: connection set-up time, small-message round
trip, bulk throughput; and the boot time the certificate's issuance adds (VM start to the first
line of code with distribution up, TLS with the core's real issuance against the emulator, vs
plain TCP). Prints the figures; asserts nothing about speed.

Run as root after `mix test` compiled elixir/_build/test and the NIF is built:
  python3 benches/tls_dist.py [--connects 20] [--rtts 5000] [--bulk-mib 16] [--bulk-n 8] [--boots 5]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))

from testbed import Bed, fully_meshed, node, require_root_and_netns, wait_until  # noqa: E402
from tls_test import CA, console, result, tls_env, tls_flags  # noqa: E402

# Runs on a hidden console at a's address, against node b: connect/disconnect N times, then
# small round trips and bulk echoes over one connection. Prints one RESULT line of numbers.
MEASURE = """
b = :"%(b)s"
connect = for _ <- 1..%(connects)d do
  {t, true} = :timer.tc(fn -> Node.connect(b) end)
  true = Node.disconnect(b)
  Process.sleep(100)
  t
end
true = Node.connect(b)
echo = Node.spawn(b, fn -> loop = fn loop -> receive do {from, m} -> send(from, m); loop.(loop) end end; loop.(loop) end)
me = self()
send(echo, {me, :warm}); receive do :warm -> :ok end
{rtt, _} = :timer.tc(fn -> for i <- 1..%(rtts)d, do: (send(echo, {me, i}); receive do ^i -> :ok end) end)
blob = :crypto.strong_rand_bytes(%(bulk_mib)d * 1_048_576)
send(echo, {me, blob}); receive do ^blob -> :ok end
{bulk, _} = :timer.tc(fn -> for _ <- 1..%(bulk_n)d, do: (send(echo, {me, blob}); receive do ^blob -> :ok end) end)
{:ok, info} = :net_kernel.node_info(b)
IO.puts("RESULT " <> Enum.join([elem(info[:address], 3) | connect] ++ [rtt, bulk], " "))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connects", type=int, default=20)
    ap.add_argument("--rtts", type=int, default=5000)
    ap.add_argument("--bulk-mib", type=int, default=16)
    ap.add_argument("--bulk-n", type=int, default=8)
    ap.add_argument("--boots", type=int, default=5)
    args = ap.parse_args()
    require_root_and_netns()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    with Bed(interval_ms=1000) as bed:
        tls = tls_env(CA("bench CA").store(bed, "ecs-peers/bench-ca"), )
        tls["ECS_PEERS_TLS_VALIDITY"] = "24h"  # no renewal during the measurement
        figures = {}
        for mode in ("tcp", "tls"):
            ips = [t["ip"] for t in bed.seed({"eu-west-2": 2})["eu-west-2"]] if mode == "tcp" else \
                [bed.run_task("eu-west-2")["ip"] for _ in range(2)]
            for ip in ips:
                bed.add_host("eu-west-2", ip)
                if mode == "tls":
                    bed.start_node(ip, erl_flags=tls_flags(), env=tls)
                else:
                    bed.start_node(ip)
            wait_until(lambda: fully_meshed(bed, ips), 120, f"the {mode} pair to mesh")
            a, b = ips
            code = MEASURE % {"b": node(b), "connects": args.connects, "rtts": args.rtts,
                              "bulk_mib": args.bulk_mib, "bulk_n": args.bulk_n}
            out = result(console(bed, a, code, tls if mode == "tls" else None, name="bench"))
            proto, *nums = out.split()
            nums = [int(n) for n in nums]
            connect, rtt, bulk = nums[:args.connects], nums[-2], nums[-1]
            boots = []
            for i in range(args.boots):
                t0 = time.monotonic()
                line = result(console(bed, a, 'IO.puts("RESULT #{elem(:erlang.statistics(:wall_clock), 0)}")',
                                      tls if mode == "tls" else None, name=f"boot{i}"))
                boots.append((int(line), (time.monotonic() - t0) * 1000))
            figures[mode] = {
                "proto": proto,
                "connect_ms": statistics.median(connect) / 1000, "connect_min_ms": min(connect) / 1000,
                "first_connect_ms": connect[0] / 1000,
                "rtt_us": rtt / args.rtts,
                "bulk_mib_s": args.bulk_mib * args.bulk_n * 2 / (bulk / 1e6),
                "boot_vm_ms": statistics.median(b[0] for b in boots),
                "boot_cmd_ms": statistics.median(b[1] for b in boots),
            }
            for ip in ips:
                bed.kill_node(ip)
        print(f"connects {args.connects}, round trips {args.rtts}, bulk {args.bulk_n} x {args.bulk_mib} MiB echoed "
              f"(MiB/s counts both directions), boots {args.boots}")
        print(f"{'':28} {'TCP':>10} {'TLS':>10}")
        rows = [("connect, median (ms)", "connect_ms"), ("connect, min (ms)", "connect_min_ms"),
                ("first connect (ms)", "first_connect_ms"), ("small round trip (µs)", "rtt_us"),
                ("bulk (MiB/s)", "bulk_mib_s"), ("VM start → code, median (ms)", "boot_vm_ms"),
                ("whole console command (ms)", "boot_cmd_ms")]
        for label, k in rows:
            print(f"{label:28} {figures['tcp'][k]:>10.2f} {figures['tls'][k]:>10.2f}")
        print(f"links: tcp={figures['tcp']['proto']} tls={figures['tls']['proto']}")


if __name__ == "__main__":
    main()
