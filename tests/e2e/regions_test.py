"""End-to-end: `regions: :all`, the Phoenix configuration that names no region. Real BEAM nodes in
network namespaces on three "VPCs" (eu-west-2, us-west-2, ap-southeast-2, joined by the router
as peering joins them) cluster through EcsPeers.Strategy against the project's AWS emulator; every
node's only source is `[type: :ecs, cluster: :auto, service: "api", regions: :all]`, and
`region_probe_interval` is PROBE_MS. It proves, in order:
  1. nodes in two regions mesh, each with one source status per region of the `aws` partition:
     its own and the other present, ap-southeast-2 (no cluster there yet) and every other region
     absent, none failing;
  2. the same service started in the third region (ap-southeast-2, its tasks' BEAMs booted there)
     is found by every earlier node's own poll within one probe interval of the tasks running
     (plus one polling interval for the round that carries it), and every node connects to the
     new tasks; no earlier node restarted (the same OS process, the strategy never restarted).

Run as root, after `mix test` has compiled elixir/_build/test: python3 tests/e2e/regions_test.py
Prints one line per scenario and `N passed, N failed`; exits non-zero when any failed.
"""
import time

from scenarios import Scenarios
from testbed import Bed, fully_meshed, knows, node, require_root_and_netns, wait_until

INTERVAL_MS = 1000
PROBE_MS = 5000
SOURCES = '[[type: :ecs, cluster: :auto, service: "api", regions: :all]]'
NEW = "ap-southeast-2"


def source_of(status, region):
    return next((s for s in status["sources"] if s.get("region") == region), None)


def main():
    require_root_and_netns()
    scenario = Scenarios()
    with Bed(interval_ms=INTERVAL_MS) as bed:
        bed.probe_ms = PROBE_MS
        print(f"test bed {bed.prefix}: router namespace {bed.router}, logs in {bed.work}", flush=True)
        tasks = bed.seed({"eu-west-2": 2, "us-west-2": 1})
        first = [t["ip"] for ts in tasks.values() for t in ts]
        for region, ts in tasks.items():
            for t in ts:
                bed.add_host(region, t["ip"])
                bed.start_node(t["ip"], sources=SOURCES)

        def two_regions_mesh():
            wait_until(lambda: fully_meshed(bed, first), 90, "the nodes of two regions to mesh")

            def every_region_reported():
                out = {}
                for ip in first:
                    s = bed.status(ip)
                    if not s or not source_of(s, NEW) or not source_of(s, "us-east-1"):
                        return None
                    out[ip] = s
                return out

            statuses = wait_until(every_region_reported, 30, "every node to report every region")
            for ip, s in statuses.items():
                own, other = ("eu-west-2", "us-west-2") if ip.startswith("10.201.") else ("us-west-2", "eu-west-2")
                assert source_of(s, own)["absent"] is None and source_of(s, other)["absent"] is None, s["sources"]
                assert source_of(s, NEW)["absent"], f"{node(ip)}: {source_of(s, NEW)}"
                failing = [x for x in s["sources"] if not x["ok"]]
                assert not failing, f"{node(ip)}: failing {failing}"
            n = len(statuses[first[0]]["sources"])
            absent = sum(1 for x in statuses[first[0]]["sources"] if x["absent"])
            return f"{len(first)} nodes; {n} regions polled per node, {absent} absent"

        scenario("nodes with regions: :all in two regions mesh; the other regions are absent", two_regions_mesh)

        def third_region_joins():
            before = {ip: (bed.hosts[ip]["proc"].pid, bed.status(ip)["restarts"]) for ip in first}
            new = bed.world("run", {"region": NEW, "cluster": "web", "subnet": "10.203.0.0/24",
                                    "family": "api", "count": 2, "group": "service:api"})
            running_at = time.monotonic()
            new_ips = [t["ip"] for t in new]
            bed._remember(new)
            for ip in new_ips:
                bed.add_host(NEW, ip)
                bed.start_node(ip, sources=SOURCES)
            # Counted with each node's own poll counter: one probe interval is PROBE_MS /
            # INTERVAL_MS rounds (jitter 0.1 makes a round 0.9-1.1 intervals: one more), and the
            # round that carries the probe's answer one more.
            polls_at_start = {ip: bed.status(ip)["poll"] for ip in first}
            bound = PROBE_MS // INTERVAL_MS + 2
            found_at, found_after = {}, {}

            def everyone_found_them():
                for ip in first:
                    if ip not in found_at and knows(bed, ip, new_ips):
                        found_at[ip] = bed.status(ip)["poll"] - polls_at_start[ip]
                        found_after[ip] = time.monotonic() - running_at
                return len(found_at) == len(first)

            wait_until(everyone_found_them, 60, f"every earlier node's own poll to find the {NEW} tasks")
            most = max(found_at.values())
            assert most <= bound, f"found after {found_at} polls, more than one probe interval ({bound} polls)"
            slowest = max(found_after.values())
            every = first + new_ips
            wait_until(lambda: fully_meshed(bed, every), 60, "every node to connect to the new tasks")
            for ip, (pid, restarts) in before.items():
                assert bed.hosts[ip]["proc"].poll() is None and bed.hosts[ip]["proc"].pid == pid, f"{node(ip)} restarted"
                assert bed.status(ip)["restarts"] == restarts, f"{node(ip)}'s strategy restarted"
                assert source_of(bed.status(ip), NEW)["absent"] is None
            return (f"found by every earlier node's poll within {most} polls, {slowest:.1f}s (probe "
                    f"{PROBE_MS / 1000:.0f}s = {PROBE_MS // INTERVAL_MS} polls); {len(every)} nodes meshed; no restart")

        scenario(f"the same service started in {NEW} joins within one probe interval, no restart",
                 third_region_joins)
    return scenario.summary()


if __name__ == "__main__":
    raise SystemExit(main())
