"""End-to-end, by hand: a rolling deploy across sharing wire versions (scripts/mixed-version
builds the old revision and runs this). Old and new nodes must not share a result (the sharing
key holds the wire version, so each version is its own sharing group) and must not lose a link
or a peer while the fleet is replaced one task at a time.

The bed is the namespace test bed (testbed.py), two regions, interval 1 s, each node polling one
ECS source per region, sharing: old-version nodes set `share_polling: true` (their default was
off); new-version nodes leave it out and share by default, as a deploy of this version would.
  setup     two old-version nodes per region mesh, and elect one poller per region;
  roll N/M  a new task starts in an old node's region with a new-version node, and once it is
            connected to every node and its poll has found every other, the old one is stopped as
            ECS stops a task (StopTask: draining; SIGTERM to its BEAM; then STOPPED), as the soak's
            churn does, until every node is new;
  rollback  (unless --no-rollback) one old-version task started again, and a new one stopped.
After each step, once every node has joined every other and each version's group agrees on one
poller per region, the fleet's AWS calls per minute per region are counted over ten intervals
from the emulator's call log (`/_emu/calls`, by caller address), for each version's group.

Checked all along (every 100 ms, with the soak's sampler, tests/e2e/soak.py):
  - no link lost between two running nodes (each loss explained from the logs as the soak does);
  - no peer lost: once a node's own poll (EcsPeers.status's `known`) has found a running task's
    node, every later poll finds it until that task is stopped;
  - old and new never share: every source's `poller` and `received_from` (the poll telemetry)
    name a node of the same version, or nobody (this node);
and at each step: each version's group elects its own poller for each region, which is the only
caller of that region among the group's nodes.

  python3 tests/e2e/mixed_version.py --old-tree DIR [--old-rev R --old-wire W --new-rev R
                                     --new-wire W] [--per-region N] [--no-rollback]
Prints one line per step, the figures as a JSON line, PASS/FAIL lines and `N passed, N failed`;
exits non-zero when any failed.
"""
import argparse
import json
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ beside the bed's modules

from scenarios import Scenarios
from sharing_test import REGIONS, elected
from soak import Soak
from testbed import Bed, joined, node, require_root_and_netns, wait_until

INTERVAL_MS = 1000
INTERVAL = INTERVAL_MS / 1000
# Calls are counted over this many polling intervals at each step.
WINDOW_POLLS = 10
# A step is settled when, for this many intervals running, each version's group agrees on its
# pollers and no follower finds its poller silent.
SETTLED_POLLS = 5
VERSIONS = ("old", "new")
# The line each node logs when its sharing group's members change (EcsPeers.Sharing).
GROUP_LINE = re.compile(r'^(\d\d:\d\d:\d\d\.\d\d\d) \[info\] \[libcluster:ecs\] sharing polling with (.+)$')


class Fleet:
    """The nodes of both versions, the soak's link sampler, and the checks made at every sample:
    no peer lost, no result shared across versions."""

    def __init__(self, bed, old_tree):
        self.bed = bed
        self.old_tree = old_tree
        self.links = Soak(bed)
        self.version = {}       # ip -> "old" | "new", kept after a stop (a result may name it)
        self.step = "setup"
        self.found = set()      # (a, b): a's own poll has found b's node
        self.open_losses = {}   # (a, b) -> loss record while b is missing from a's poll
        self.peer_losses = []   # {"step", "at", "a", "b", "found_again_after"}
        self.cross = {}         # (a, source, field, named) -> first sighting

    # -- the fleet --------------------------------------------------------------------------------
    def start(self, region, task, version):
        self.bed.add_host(region, task["ip"])
        old = version == "old"
        self.bed.start_node(task["ip"], share_polling=True if old else None, tree=self.old_tree if old else None)
        self.version[task["ip"]] = version
        self.links.live[task["ip"]] = (region, task["arn"])
        self.links.started_at[task["ip"]] = time.monotonic()

    def stop(self, ip):
        """ECS's stop sequence (the soak's): StopTask, SIGTERM to the BEAM, STOPPED."""
        self.links.stop(ip)

    def running(self, version=None):
        return [ip for ip in self.links.live if version is None or self.version[ip] == version]

    def region(self, ip):
        return self.links.live[ip][0]

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self):
        """One sample (the soak's links, then peers and sharing); False, so that it can lead an
        `or` in a wait_until predicate."""
        self.links.sample()
        now = time.monotonic()
        live = list(self.links.live)
        for a in live:
            if now - self.links.started_at[a] <= 3:
                continue
            s = self.bed.status(a)
            if not s:
                continue
            found = set(s.get("known") or [])
            for b in live:
                if b == a:
                    continue
                pair = (a, b)
                if node(b) in found:
                    self.found.add(pair)
                    loss = self.open_losses.pop(pair, None)
                    if loss:
                        loss["found_again_after"] = round(now - loss["mono"], 1)
                elif pair in self.found and pair not in self.open_losses:
                    loss = {"step": self.step, "at": time.strftime("%H:%M:%S"), "mono": now, "a": a, "b": b,
                            "found_again_after": None}
                    self.open_losses[pair] = loss
                    self.peer_losses.append(loss)
            for src in s.get("sources", []):
                for field in ("poller", "received_from"):
                    named = src.get(field)
                    if not named:
                        continue
                    at = named.split("@", 1)[-1]
                    if self.version.get(at) != self.version[a]:
                        self.cross.setdefault((a, src.get("id"), field, named), {
                            "step": self.step, "at": time.strftime("%H:%M:%S"), "node": node(a),
                            "version": self.version[a], "source": src.get("id"), field: named,
                            "named_version": self.version.get(at, "not in the bed")})
        return False

    def mixed_groups(self):
        """Every sharing group a node joined that held a node of the other version, from the
        nodes' logs: [{"node", "version", "at", "members"}]."""
        out = []
        for ip, v in self.version.items():
            for line in self.bed.log(ip).splitlines():
                m = GROUP_LINE.match(line)
                if m:
                    members = [x.strip() for x in m.group(2).split(",")]
                    if any(self.version.get(x.split("@", 1)[-1]) != v for x in members):
                        out.append({"node": node(ip), "version": v, "at": m.group(1), "members": members})
        return out

    def wait(self, pred, timeout, what):
        return wait_until(lambda: self.sample() or pred(), timeout, what)

    # -- a step's state -----------------------------------------------------------------------------
    def pollers(self):
        """{version: {region: poller ip}} when every version's group agrees on its poller of
        every region, else None."""
        out = {}
        for v in VERSIONS:
            group = self.running(v)
            if not group:
                continue
            out[v] = {r: elected(self.bed, group, r) for r in REGIONS}
            if not all(out[v].values()):
                return None
        return out

    def silent(self):
        return [ip for ip in self.running() for s in (self.bed.status(ip) or {}).get("sources", [])
                if s.get("poller_silent")]

    def settle(self, timeout=120):
        """Waits until every running node has joined every other (connected, and found by its own
        poll) and each version's group has agreed on its pollers, with no silent poller, for
        SETTLED_POLLS intervals. Returns the pollers."""
        quiet = {"since": None, "pollers": None}

        def settled():
            now = time.monotonic()
            p = joined(self.bed, self.running()) and not self.silent() and self.pollers()
            if not p or p != quiet["pollers"]:
                quiet.update(since=now if p else None, pollers=p)
                return False
            return now - quiet["since"] >= SETTLED_POLLS * INTERVAL and p

        return self.wait(settled, timeout, f"{self.step}: every node joined, one poller per region in each version's group")

    def calls(self):
        """The fleet's calls per minute per region over WINDOW_POLLS intervals, by version's group:
        ({region: {"old", "new", "total"}}, {version: {region: {caller node: calls}}})."""
        since = time.time()
        self.wait(lambda: time.time() - since >= WINDOW_POLLS * INTERVAL, WINDOW_POLLS * INTERVAL + 10,
                  f"{WINDOW_POLLS} intervals")
        until = time.time()
        minutes = (until - since) / 60
        per_caller = {v: {r: {} for r in REGIONS} for v in VERSIONS}
        for (ip, region), n in self.bed.calls_per_client(since, until).items():
            if region in REGIONS and ip in self.version:
                per_caller[self.version[ip]][region][node(ip)] = n
        rates = {r: {v: round(sum(per_caller[v][r].values()) / minutes) for v in VERSIONS} for r in REGIONS}
        for r in REGIONS:
            rates[r]["total"] = rates[r]["old"] + rates[r]["new"]
        return rates, per_caller


def parse_args(argv):
    p = argparse.ArgumentParser(description="A rolling deploy across sharing wire versions (scripts/mixed-version).")
    p.add_argument("--old-tree", required=True, help="the old revision's working tree, its NIF and package built")
    p.add_argument("--old-rev", default="?", help="the old revision, for the figures")
    p.add_argument("--old-wire", default="?", help="its WIRE_VERSION, for the figures")
    p.add_argument("--new-rev", default="?", help="this tree's revision, for the figures")
    p.add_argument("--new-wire", default="?", help="its WIRE_VERSION, for the figures")
    p.add_argument("--per-region", type=int, default=2, help="nodes per region (default 2)")
    p.add_argument("--no-rollback", action="store_true", help="end when every node is new")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    require_root_and_netns()
    scenario = Scenarios()
    steps = []

    with Bed(interval_ms=INTERVAL_MS) as bed:
        bed.task_lifecycle(stop="hold")
        fleet = Fleet(bed, args.old_tree)
        print(f"rolling deploy on test bed {bed.prefix}: old {args.old_rev} ({args.old_wire}) -> new {args.new_rev} "
              f"({args.new_wire}); {args.per_region} nodes per region; logs in {bed.work}", flush=True)
        tasks = bed.seed({r: args.per_region for r in REGIONS})
        for region in REGIONS:
            for t in tasks[region]:
                fleet.start(region, t, "old")

        def measure():
            pollers = fleet.settle()
            rates, per_caller = fleet.calls()
            for v, by_region in pollers.items():
                for r, p in by_region.items():
                    callers = set(per_caller[v][r])
                    assert callers == {node(p)}, (f"{v}'s group: {r} was called by {sorted(callers)} over "
                                                  f"{WINDOW_POLLS} intervals, expected only its poller {node(p)}")
            counts = {v: len(fleet.running(v)) for v in VERSIONS}
            steps.append({"step": fleet.step, "nodes": counts, "calls_per_min": rates,
                          "pollers": {v: {r: node(p) for r, p in by_region.items()} for v, by_region in pollers.items()}})
            return (f"nodes {counts}; pollers { {v: {r: node(p) for r, p in b.items()} for v, b in pollers.items()} }; "
                    f"calls/min per region (old + new = total): "
                    + "; ".join(f"{r} {rates[r]['old']} + {rates[r]['new']} = {rates[r]['total']}" for r in REGIONS))

        scenario("setup: the old version's nodes mesh and elect one poller per region", measure)

        # One task at a time, alternating regions.
        order = [ip for pair in zip(*([t["ip"] for t in tasks[r]] for r in REGIONS)) for ip in pair]

        def replace(old_ip, version):
            region = fleet.region(old_ip)
            t = bed.run_task(region)
            fleet.start(region, t, version)
            fleet.wait(lambda: joined(bed, fleet.running()), 90,
                       f"{fleet.step}: {node(t['ip'])} ({version}) connected to and found by every node")
            fleet.stop(old_ip)
            return measure()

        for i, old_ip in enumerate(order, 1):
            fleet.step = f"roll {i}/{len(order)}"
            scenario(f"{fleet.step}: a new-version task in {fleet.region(old_ip)} joins, then {node(old_ip)} "
                     f"(old) stops", replace, old_ip, "new")

        if not args.no_rollback:
            fleet.step = "rollback"
            victim = fleet.running("new")[0]
            scenario(f"rollback: an old-version task in {fleet.region(victim)} joins, then {node(victim)} (new) stops",
                     replace, victim, "old")

        losses = fleet.links.explain()
        by_cause = {c: [x for x in losses if x["cause"] == c] for c in ("strategy", "global", "unexplained")}
        cuts = fleet.links.global_cuts()
        healthy_cuts = [c for c in cuts if c[3]]
        restarts = sum((bed.status(ip) or {}).get("restarts", 0) for ip in fleet.running())
        baseline = steps[0]["calls_per_min"] if steps else None
        mixed = fleet.mixed_groups()
        groups_logged = sum(1 for ip in fleet.version for line in bed.log(ip).splitlines() if GROUP_LINE.match(line))

        def x_one_group(step):
            """The step's calls per region as a multiple of one group's (the all-old setup's)."""
            return {r: round(step["calls_per_min"][r]["total"] / baseline[r]["total"], 2) if baseline[r]["total"] else None
                    for r in REGIONS}

        for s in steps if baseline else []:
            s["x_one_group"] = x_one_group(s)
        print("figures: " + json.dumps({
            "old": {"rev": args.old_rev, "wire": args.old_wire}, "new": {"rev": args.new_rev, "wire": args.new_wire},
            "steps": steps,
            "links_lost": {c: len(v) for c, v in by_cause.items()},
            "global_cut_lines": {"between_healthy_nodes": len(healthy_cuts), "with_a_stopping_node": len(cuts) - len(healthy_cuts)},
            "peers_lost": len(fleet.peer_losses), "cross_version_results": len(fleet.cross),
            "cross_version_groups": len(mixed),
            "strategy_restarts": restarts}), flush=True)
        for x in losses:
            print(f"  link lost {x['at']} ({x['phase']}): {node(x['a'])} -/- {node(x['b'])}, cause {x['cause']}"
                  + (f" after the stop of {node(x['after_stop_of'])}" if x.get("after_stop_of") else "")
                  + f", restored after {x['restored_after']} s", flush=True)
        for x in fleet.peer_losses:
            print(f"  peer lost {x['at']} ({x['step']}): {node(x['a'])} ({fleet.version[x['a']]}) no longer found "
                  f"{node(x['b'])} ({fleet.version[x['b']]}), found again after {x['found_again_after']} s", flush=True)
        for x in fleet.cross.values():
            print("  shared across versions: " + json.dumps(x), flush=True)
        for x in mixed:
            print("  a sharing group across versions: " + json.dumps(x), flush=True)

        check = scenario.check
        check("no link lost between running nodes (sampled every 100 ms)", not losses,
              f"{len(by_cause['strategy'])} by the strategy, {len(by_cause['global'])} by OTP global, "
              f"{len(by_cause['unexplained'])} unexplained")
        check("OTP global cut no link between healthy nodes", not healthy_cuts,
              f"{len(healthy_cuts)} cut lines between healthy nodes ({len(cuts) - len(healthy_cuts)} with a stopping node)")
        check("no peer lost: every node's poll kept finding every running task's node", not fleet.peer_losses,
              f"{len(fleet.peer_losses)} lost")
        check("old and new never share: every poller and received_from names a node of the same version",
              not fleet.cross and fleet.found, f"{len(fleet.cross)} across versions")
        check("old and new never join one sharing group (each node's logged group members)",
              not mixed and groups_logged, f"{len(mixed)} of {groups_logged} group changes held both versions")
        both = [s for s in steps if s["nodes"]["old"] and s["nodes"]["new"]]
        check("each version's group elects its own poller of each region while both run",
              both and all(set(s["pollers"]) == set(VERSIONS) for s in both),
              "; ".join(f"{s['step']}: {s['pollers']}" for s in both) or "no step ran both versions")
        # Each version's group calls AWS at one group's rate: about twice the all-old rate while
        # both versions run, once it when one does (a quarter either way for jitter and for
        # the descriptions of a step's new task).
        off = {s["step"]: s["x_one_group"] for s in steps if baseline and any(
            x is None or abs(x - sum(1 for v in VERSIONS if s["nodes"][v])) > 0.25 * sum(1 for v in VERSIONS if s["nodes"][v])
            for x in s["x_one_group"].values())}
        planned = 1 + len(order) + (0 if args.no_rollback else 1)
        check("the fleet's calls per region: about 2x one group's while both versions run, 1x with one",
              baseline and not off and len(steps) == planned,
              f"{len(steps)} of {planned} steps measured: " + "; ".join(f"{s['step']} {s.get('x_one_group')}" for s in steps)
              + (f"; off: {off}" if off else ""))
        check("no crash", restarts == 0, f"strategy restarts: {restarts}; every running BEAM alive")
        check("the fleet is whole at the end", joined(bed, fleet.running()),
              ", ".join(f"{node(ip)} ({fleet.version[ip]})" for ip in fleet.running()))

    return scenario.summary()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
