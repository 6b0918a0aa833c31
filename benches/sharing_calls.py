"""Fleet-wide AWS calls per minute with and without fleet-shared polling, counted at the
emulator, for fleets of 2, 5, 10 and 20 real BEAM nodes over two regions in the namespace test bed
(tests/e2e/testbed.py); plus convergence (a new task -> known on every node, and connected
everywhere) and the bed's memory at each size.

Each mode (sharing off: `share_polling: false`; sharing on: the key left out, the default) gets
one bed that grows: at each size the missing tasks are started (half per region, eu-west-2 first)
and their BEAMs booted; once every node sees every other (and, with sharing on, the nodes agree on
one poller per source and no follower has reported its poller silent for ten intervals, read
from their telemetry, or 120 s have passed), every AWS call the
emulator logs over a window of `--window` seconds is counted (`/_emu/calls`: the caller's
address, the operation, the region). Then the convergence probe: a task started PROVISIONING (the
emulator holds it), its BEAM booted and polling, the task made RUNNING; the seconds until every
other node's telemetry counts it among the eu-west-2 source's peers ("known") and until every
node is connected to it. That node stays: the next size counts it.

Every node polls both regions (one ECS service source each), `polling_interval` 1 s unless
`--interval-ms`, `max_attempts: 1` (every SDK attempt is a call the emulator sees); a steady poll
is one ListTasks per source, so one node alone makes 2 x 60 = 120 calls a minute.

Run as root (scripts build the NIF and compile the Elixir package first):
  benches/sharing_calls.sh [--sizes 2,5,10,20] [--modes off,on] [--window 30] [--interval-ms 1000] [--callers]
Prints one row per mode and size, then the ratios (sharing on: calls at the largest size over
calls at the smallest; on / off per size).
"""
import argparse
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in tests/e2e
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "e2e"))

from testbed import VPCS, Bed, fully_meshed, node, require_root_and_netns, wait_until  # noqa: E402

REGIONS = ("eu-west-2", "us-west-2")


def source(status, region):
    for s in (status or {}).get("sources", []):
        if s.get("region") == region:
            return s
    return None


def agreed(bed, ips):
    """True when, for each region, exactly one node polls its source here and every other names
    that node as the poller (the nodes' telemetry)."""
    for region in REGIONS:
        here = [ip for ip in ips if (source(bed.status(ip), region) or {"poller": "?"}).get("poller") is None]
        if len(here) != 1:
            return False
        if any((source(bed.status(ip), region) or {}).get("poller") != node(here[0]) for ip in ips if ip != here[0]):
            return False
    return True


def silent(bed, ips):
    """The nodes whose telemetry says a source's poller went silent (they poll it themselves)."""
    return [ip for ip in ips for r in REGIONS if (source(bed.status(ip), r) or {}).get("poller_silent")]


class Fleet:
    def __init__(self, bed, share):
        self.bed, self.share = bed, share
        self.ips = []
        self.pending = {r: [] for r in REGIONS}  # seeded tasks whose BEAM has not started

    def grow(self, n):
        """Starts tasks and BEAMs until the fleet has `n` nodes, half per region."""
        want = {"eu-west-2": (n + 1) // 2, "us-west-2": n // 2}
        have = {r: sum(1 for ip in self.ips if self.bed.hosts[ip]["region"] == r) for r in REGIONS}
        for region in REGIONS:
            missing = want[region] - have[region]
            while missing > 0 and self.pending[region]:
                self.start(region, self.pending[region].pop(0))
                missing -= 1
            while missing > 0:
                k = min(missing, 10)  # RunTask starts at most 10 tasks a call
                tasks = self.bed.world("run", {"region": region, "cluster": "web", "subnet": f"{VPCS[region][1]}.0/24",
                                               "family": "api", "count": k, "group": "service:api"})
                self.bed._remember(tasks)
                for t in tasks:
                    self.start(region, t)
                missing -= k

    def start(self, region, t):
        self.bed.add_host(region, t["ip"])
        # On: the key left out (the default); off: said so.
        self.bed.start_node(t["ip"], share_polling=None if self.share else False)
        self.ips.append(t["ip"])

    def settle(self, steady=True):
        started = time.monotonic()
        wait_until(lambda: all(self.bed.status(ip) for ip in self.ips) and fully_meshed(self.bed, self.ips), 300,
                   f"{len(self.ips)} nodes to mesh")
        meshed = time.monotonic() - started
        agreement = None
        if self.share and not steady:
            try:
                wait_until(lambda: agreed(self.bed, self.ips), 60, "one poller per source", step=0.5)
                agreement = round(time.monotonic() - started, 1)
            except AssertionError:
                agreement = "none in 60 s"
        elif self.share:
            # Agreed, and no follower polling on its own because its poller went silent (a
            # member that just joined follows once it has a complete result from the poller).
            # A joining member drops the poller's "same as result N" results until a complete one
            # reaches it (at least every 8th result), and polls on its own meanwhile: the steady
            # state is ten quiet intervals in a row.
            quiet = {"since": None}

            def steady():
                now = time.monotonic()
                if not agreed(self.bed, self.ips) or silent(self.bed, self.ips):
                    quiet["since"] = None
                    return False
                quiet["since"] = quiet["since"] or now
                return now - quiet["since"] >= 10 * self.bed.interval_ms / 1000

            try:
                wait_until(steady, 120, "one poller per source, no follower silent for ten intervals", step=0.2)
                agreement = round(time.monotonic() - started, 1)
            except AssertionError:
                agreement = "none in 120 s"
        # Two more polls everywhere: a node that just took a source over has made its first call.
        start = {ip: self.bed.status(ip)["poll"] for ip in self.ips}
        wait_until(lambda: all(self.bed.status(ip)["poll"] >= start[ip] + 2 for ip in self.ips), 60, "two polls")
        return round(meshed, 1), agreement

    def window(self, seconds):
        since = time.time()
        peak = {"beam": 0, "emulator": 0, "beams": 0}
        while time.time() - since < seconds:
            rss = self.bed.rss_kib()
            if rss["beam"] > peak["beam"]:
                peak = rss
            time.sleep(1)  # a measuring window, not synchronisation
        until = time.time()
        calls = self.bed.calls_per_client(since, until)
        return calls, until - since, peak

    def convergence(self):
        """(seconds until every other node knows the new task: max, median; until connected
        everywhere); the new node joins the fleet."""
        bed = self.bed
        bed.task_lifecycle(start="hold")
        t = bed.run_task("eu-west-2")
        bed.task_lifecycle(start="immediate")
        olds = list(self.ips)
        self.start("eu-west-2", t)
        new = t["ip"]
        wait_until(lambda: (bed.status(new) or {}).get("poll", 0) >= 2, 120, f"{node(new)} to poll")
        before = {ip: source(bed.status(ip), "eu-west-2")["peers"] for ip in olds}
        t0 = time.time()
        bed.advance_tasks("eu-west-2", [t["arn"]], "RUNNING")
        known, connected = {}, {}

        def done():
            now = time.time()
            for ip in olds:
                s = bed.status(ip)
                if ip not in known and source(s, "eu-west-2")["peers"] > before[ip]:
                    known[ip] = now - t0
                if ip not in connected and node(new) in s["nodes"]:
                    connected[ip] = now - t0
            return len(known) == len(olds) and len(connected) == len(olds)

        wait_until(done, 60, f"every node to know and connect {node(new)}", step=0.05)
        return (round(max(known.values()), 2), round(statistics.median(known.values()), 2),
                round(max(connected.values()), 2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,5,10,20")
    ap.add_argument("--modes", default="off,on")
    ap.add_argument("--window", type=float, default=30.0, help="seconds of calls counted per size")
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--callers", action="store_true", help="also print each region's callers and their calls")
    ap.add_argument("--no-settle", action="store_true",
                    help="sharing on: count from the moment the nodes agree on the pollers (joiners' transient included)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    modes = args.modes.split(",")
    for m in modes:
        if m not in ("off", "on"):
            sys.exit(f"--modes: {m!r} is not off or on")
    require_root_and_netns()
    rows = []
    header = (f"{'sharing':<7}  {'nodes':>5}  {'fleet calls/min':>15}  {'per node/min':>12}  {'callers eu/us':>13}  "
              f"{'meshed s':>8}  {'settled s':>9}  {'BEAM RSS MiB':>12}  {'per BEAM':>8}  {'emu MiB':>7}  "
              f"{'load':>4}  {'known max/med s':>15}  {'connected s':>11}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, interval "
          f"{args.interval_ms} ms, window {args.window:g} s, two regions, one ECS source per region", flush=True)
    print(header, flush=True)
    for mode in modes:
        with Bed(interval_ms=args.interval_ms) as bed:
            fleet = Fleet(bed, mode == "on")
            fleet.pending = bed.seed({r: 1 for r in REGIONS})
            for n in sizes:
                fleet.grow(n)
                meshed, agreement = fleet.settle(steady=not args.no_settle)
                calls, secs, rss = fleet.window(args.window)
                total = sum(calls.values())
                per_min = total * 60 / secs
                nodes = len(fleet.ips)
                who = {r: len({ip for (ip, reg) in calls if reg == r}) for r in REGIONS}
                load = os.getloadavg()[0]
                known_max, known_med, conn = fleet.convergence()
                row = {"mode": mode, "nodes": nodes, "per_min": per_min, "per_node": per_min / nodes,
                       "callers": who, "meshed": meshed, "agreed": agreement, "beam_mib": rss["beam"] / 1024,
                       "per_beam": rss["beam"] / 1024 / max(rss["beams"], 1), "emu_mib": rss["emulator"] / 1024,
                       "load": load, "known": (known_max, known_med), "connected": conn}
                rows.append(row)
                print(f"{mode:<7}  {nodes:>5}  {per_min:>15.0f}  {per_min / nodes:>12.1f}  "
                      f"{who['eu-west-2']:>6}/{who['us-west-2']:<6}  {meshed:>8}  {str(agreement or '-'):>9}  "
                      f"{row['beam_mib']:>12.0f}  {row['per_beam']:>8.0f}  {row['emu_mib']:>7.0f}  {load:>4.1f}  "
                      f"{known_max:>7}/{known_med:<7}  {conn:>11}", flush=True)
                if args.callers:
                    for r in REGIONS:
                        per = sorted(((n, ip) for (ip, reg), n in calls.items() if reg == r), reverse=True)
                        print(f"         {r} callers (calls in the window): "
                              + ", ".join(f"{node(ip)} {n}" for n, ip in per), flush=True)
    on = [r for r in rows if r["mode"] == "on"]
    off = {r["nodes"]: r for r in rows if r["mode"] == "off"}
    if len(on) >= 2:
        print(f"sharing on: fleet calls/min at {on[-1]['nodes']} nodes / at {on[0]['nodes']} nodes = "
              f"{on[-1]['per_min'] / on[0]['per_min']:.2f}x", flush=True)
    for r in on:
        if r["nodes"] in off:
            print(f"{r['nodes']} nodes: sharing on / off = {r['per_min'] / off[r['nodes']]['per_min']:.2f}x "
                  f"({r['per_min']:.0f} vs {off[r['nodes']]['per_min']:.0f} calls/min); known within "
                  f"{r['known'][0]} vs {off[r['nodes']]['known'][0]} s", flush=True)


if __name__ == "__main__":
    main()
