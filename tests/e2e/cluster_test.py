"""End-to-end: real BEAM nodes, one per ECS task, in network namespaces on two "VPCs" (eu-west-2 and
us-west-2) joined by peering, cluster through EcsPeers.Strategy (libcluster contract double,
cargo-built NIF) against the AWS emulator.

Proves, in order:
  1. every node connects to every other, across both regions;
  2. a new task joins;
  3. a task stopped in the emulator is disconnected everywhere within two polls (counted with each
     node's own poll counter), and, knowing it has left, does not pull itself back in;
  4. with the emulator stopped (SIGSTOP) for three polls, nobody is disconnected;
  5. a BEAM node killed while its task is still listed is retried by the others, who neither crash
     nor lose each other.

Run as root, after `mix test` has compiled elixir/_build/test: python3 tests/e2e/cluster_test.py
Prints one line per scenario and `N passed, N failed`; exits non-zero when any failed.
"""
import json
import os
import sys
import time
import traceback

from testbed import ENDPOINT, ROOT, Bed, fully_meshed, node, require_root_and_netns, sees, wait_until

INTERVAL_MS = 1000


def main():
    require_root_and_netns()
    results = []

    def scenario(name, fn):
        started = time.monotonic()
        try:
            detail = fn() or ""
            results.append(True)
            print(f"PASS {name} ({time.monotonic() - started:.1f}s) {detail}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            results.append(False)
            print(f"FAIL {name}: {e}", flush=True)
            traceback.print_exc(limit=3)

    with Bed(interval_ms=INTERVAL_MS) as bed:
        print(f"test bed {bed.prefix}: router namespace {bed.router}, emulator on 10.200.0.1:5000, "
              f"logs in {bed.work}", flush=True)
        tasks = bed.seed({"eu-west-2": 2, "us-west-2": 1})
        eu_a, eu_b = tasks["eu-west-2"]
        us_a = tasks["us-west-2"][0]
        live = {}  # ip -> (region, arn)
        for region, t in (("eu-west-2", eu_a), ("eu-west-2", eu_b), ("us-west-2", us_a)):
            bed.add_host(region, t["ip"])
            bed.start_node(t["ip"])
            live[t["ip"]] = (region, t["arn"])

        def all_connect():
            ips = list(live)
            wait_until(lambda: fully_meshed(bed, ips), 90, "every node to see every other")
            return "nodes: " + ", ".join(node(i) for i in ips)

        scenario("all nodes connect across both regions", all_connect)

        def new_task_joins():
            t = bed.run_task("us-west-2")
            bed.add_host("us-west-2", t["ip"])
            bed.start_node(t["ip"])
            live[t["ip"]] = ("us-west-2", t["arn"])
            wait_until(lambda: fully_meshed(bed, list(live)), 90, f"{node(t['ip'])} to join everyone")
            return f"{node(t['ip'])} joined"

        scenario("a new task joins", new_task_joins)

        def stopped_task_is_disconnected():
            victim = eu_b["ip"]
            region, arn = live.pop(victim)
            others = list(live)
            before = {ip: bed.status(ip)["poll"] for ip in others}
            bed.stop_task(region, arn)
            after = {}

            def gone_everywhere():
                for ip in others:
                    s = bed.status(ip)
                    if ip not in after and node(victim) not in s["nodes"]:
                        after[ip] = s["poll"]
                return len(after) == len(others)

            wait_until(gone_everywhere, 30, f"{node(victim)} to be disconnected everywhere")
            polls = {ip: after[ip] - before[ip] for ip in others}
            late = {ip: n for ip, n in polls.items() if n > 2}
            assert not late, f"disconnected after more than two polls: {late}"
            # It knows it has left: it stays out instead of reconnecting (libcluster issue #202).
            wait_until(lambda: bed.status(victim)["nodes"] == [], 10, f"{node(victim)} to drop its peers")
            leaving_at = bed.status(victim)["poll"]
            wait_until(lambda: bed.status(victim)["poll"] >= leaving_at + 3, 20, "three more polls")
            assert bed.status(victim)["nodes"] == [], "the stopped task's node reconnected"
            assert all(node(victim) not in bed.status(ip)["nodes"] for ip in others)
            # The survivors stay (or, after OTP's global cut a link for a moment, are again) meshed.
            healed_from = {ip: bed.status(ip)["poll"] for ip in others}
            wait_until(lambda: fully_meshed(bed, others), 15, "the other nodes to be meshed again")
            heal = max(bed.status(ip)["poll"] - healed_from[ip] for ip in others)
            bed.kill_node(victim)
            return ("polls until disconnected, per node: " + ", ".join(f"{node(i)}={n}" for i, n in polls.items())
                    + f"; survivors meshed within {heal} more polls")

        scenario("a stopped task is disconnected everywhere within two polls", stopped_task_is_disconnected)

        def emulator_down_disconnects_nobody():
            ips = list(live)
            start = {ip: bed.status(ip)["poll"] for ip in ips}
            bed.pause_emulator()
            broken = []
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    for ip in ips:
                        if not sees(bed, ip, [o for o in ips if o != ip]):
                            broken.append((ip, bed.status(ip)))
                    if all(bed.status(ip)["poll"] >= start[ip] + 3 for ip in ips):
                        break
                    time.sleep(0.1)
                else:
                    raise AssertionError("fewer than three polls in 60 s while the emulator was stopped")
            finally:
                bed.resume_emulator()
            assert not broken, f"a node lost peers while AWS was down: {broken[:3]}"
            for ip in ips:
                assert "is failing (keeping its" in bed.log(ip), f"{node(ip)} did not log the failing source"
            wait_until(lambda: all("recovered" in bed.log(ip) for ip in ips), 30, "sources to recover")
            assert fully_meshed(bed, ips)
            return "polls while stopped: " + ", ".join(f"{node(i)}={bed.status(i)['poll'] - start[i]}" for i in ips)

        scenario("the emulator stopped for three polls disconnects nobody", emulator_down_disconnects_nobody)

        def killed_node_is_retried():
            victim = eu_a["ip"]
            bed.kill_node(victim)
            others = [ip for ip in live if ip != victim]
            start = {ip: bed.status(ip)["poll"] for ip in others}
            wait_until(lambda: all(bed.status(ip)["poll"] >= start[ip] + 3 for ip in others), 30,
                       "three polls on every other node")
            for ip in others:
                s = bed.status(ip)
                assert s["strategy"] and s["restarts"] == 0, f"{node(ip)}: strategy crashed: {s}"
                assert set(s["nodes"]) == {node(o) for o in others if o != ip}, f"{node(ip)} sees {s['nodes']}"
                attempts = bed.log(ip).count(f'unable to connect to :"{node(victim)}"')
                assert attempts >= 2, f"{node(ip)} tried {node(victim)} only {attempts} times"
            return "still listed, still retried, nobody crashed"

        scenario("a killed node whose task is still listed is retried; nobody crashes", killed_node_is_retried)

        def names_from_epmd():
            t = bed.run_task("us-west-2")
            worker = t["ip"]
            bed.add_host("us-west-2", worker)
            bed.start_node(worker, basename="worker", node_names="epmd")
            live[worker] = ("us-west-2", t["arn"])
            alive = [ip for ip in live if ip != eu_a["ip"]]  # eu_a's BEAM was killed, its task still listed
            want = {ip: (f"worker@{ip}" if ip == worker else node(ip)) for ip in alive}
            # The worker's strategy names everyone by their EPMD and connects to all of them.
            wait_until(lambda: set((bed.status(worker) or {"nodes": []})["nodes"]) == {want[i] for i in alive if i != worker},
                       60, "the EPMD-naming node to connect to every live node")
            # The CLI sees the same names; the killed node (no name registered) is left out.
            env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
            r = bed.ns_exec(bed.router, os.path.join(ROOT, "target", "debug", "ecs-peers"), "list", "--json",
                            "--node-names", "epmd", "--ecs", "eu-west-2/web/api", "--ecs", "us-west-2/web/api",
                            "--endpoint-url", ENDPOINT, "--max-attempts", "1", env=env, check=False)
            snapshot = json.loads(r.stdout)
            got = {p["ip"]: p["node"] for p in snapshot["peers"]}
            assert got == want, f"EPMD names: got {got}, want {want}"
            return f"worker@{worker} connected to {len(alive) - 1} nodes; list --node-names epmd: {sorted(got.values())}"

        scenario("peers are named by what their EPMD reports (node_names: epmd)", names_from_epmd)

    passed, failed = results.count(True), results.count(False)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
