"""Soak: a cluster that never falls apart because AWS had a bad minute.

Four BEAM nodes (two per region) cluster through EcsPeers.Strategy in the namespace test bed while
the emulator injects, one phase after another:
  baseline       no faults (the reference for API calls)
  throttle       30% of ECS calls in both regions answer ThrottlingException; a task starts, and
                 one stops
  stall          eu-west-2's listing is two pages (the cluster is shared with 120 tasks of another
                 family, told apart by container name); the second page stalls past the poll
                 timeout
  blackhole      every us-west-2 call stalls past the poll timeout (the region is unreachable); a
                 task in eu-west-2 stops, and must be dropped by every node within two polls of
                 ECS reporting it STOPPED all the same
  5xx            bursts of ServerException in both regions (one burst of 20 per region every 30 s)
  poller_killed  a crash: SIGKILL of the BEAM of the node elected to poll eu-west-2 (with sharing
                 off: of an eu-west-2 node). Its task stays listed RUNNING, as a crash leaves it
                 until ECS stops it; then ECS stops it (STOPPED) and a replacement task starts.
                 With sharing another node must take the source over (the emulator's log says
                 when), and the group must agree on one poller per source again
  partition      the router drops what it forwards between the two regions' VPCs (each side still
                 reaches AWS) for less than net_ticktime, so no distribution link may drop; both
                 sides must keep polling both regions, and with sharing each region is polled by
                 one node again after healing
  recover        no faults; a task stops and must be dropped everywhere within two polls of STOPPED

Every stop but the crash is ECS's stop sequence (the emulator holds stopped tasks: `stop: hold`):
StopTask (the task is DEACTIVATING, desiredStatus STOPPED: a draining peer), SIGTERM to its BEAM
(a graceful shutdown, as the ECS agent sends it), and once the BEAM has exited, STOPPED.

Every 100 ms it samples every node's Node.list. Each link between two running tasks' nodes that
disappears is explained from the nodes' logs: by the strategy (`[libcluster:ecs] disconnected
from`: a spurious disconnect, which must never happen), by OTP's global
(prevent_overlapping_partitions cutting links while nodes disagree about a node that was just
stopped), by a crash (a link to the killed node, lost after its kill: the one explained loss), or
not at all (unexplained). None but the crash's may happen, and every node must lose its link to
the killed node. Besides the sampled losses (a cut restored within 100 ms can slip between two
samples), every line in which global cuts a link between two nodes neither of which is stopping
(or killed) is counted from the nodes' logs: it must be 0. Crashes (BEAM exits other than the
kill, strategy restarts) must be 0.

Every node runs with fleet-shared polling on (`share_polling: true`, passed explicitly): one node
per source calls AWS and the others apply its results, so a fault hits the one poller and reaches
the others as its failed result (or as its silence, after which they poll themselves);
`--sharing off` runs the same soak with every node polling on its own (`share_polling: false`).
With sharing, the call rates compared are the fleet's per minute (they do not grow with the
nodes), and "within two polls" is counted in the polls of the node whose result each node applied
(itself or its poller), from the emulator's call log: a follower's own poll counter also counts
the updates its received results publish. During the partition every node cut off from a
source's poller polls that source itself (poller_silent): the bound on the fleet's rate there is
one fleet's per node polling it (with sharing).

`--tls`: every node's distribution is TLS (`-proto_dist ecs_peers_tls`); the cluster CA is made
by the soak and stored in the emulator's Secrets Manager, and each node's core issues its
certificate from it (tests/e2e/tls_test.py's CA and environment), valid one minute: every node
renews it every 40 s, through the faults.

  python3 tests/e2e/soak.py --tls          # the short version the test command runs, sharing on
  python3 tests/e2e/soak.py --long         # several minutes per phase (scripts/soak), about 10 min
  python3 tests/e2e/soak.py --minutes 30   # the long soak scaled to take about 30 minutes
  python3 tests/e2e/soak.py --sharing off  # every node polling on its own
Prints the figures and `N passed, N failed`.
"""
import argparse
import datetime
import json
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ beside the e2e scripts

from scenarios import Scenarios
from testbed import Bed, crashed_processes, fully_meshed, node, require_root_and_netns, wait_until

# Seconds per phase. The partition is never scaled: it must end well inside net_ticktime (60 s:
# a link is dropped after 45 to 75 s of silence), or healthy links would drop by design.
SHORT = {"baseline": 10, "throttle": 25, "stall": 15, "blackhole": 20, "5xx": 10, "poller_killed": 30,
         "partition": 10, "recover": 10}
LONG = {"baseline": 60, "throttle": 180, "stall": 60, "blackhole": 60, "5xx": 30, "poller_killed": 60,
        "partition": 30, "recover": 20}
UNSCALED = ("partition",)
# A long run's seconds besides its phases (the bed, the cluster forming and settling, the waits
# for drops and for one poller after the kill and the partition): 53 s in a run of --minutes 8
# (2026-12-05, 443 s in all with an estimate of 90 s; the partition's healing took 23 s of it).
LONG_OVERHEAD_S = 55
# After a kill, how long ECS leaves the crashed task listed RUNNING before it reports it STOPPED.
CRASH_LISTED_S = {"short": 5, "long": 15}


def options(argv):
    """The soak's command line: --long, --minutes N (implies --long), --sharing on|off, --tls."""
    p = argparse.ArgumentParser(prog="soak.py", description="The soak (tests/e2e/soak.py's docstring).")
    p.add_argument("--long", action="store_true", help="several minutes per phase (about 10 minutes in all)")
    p.add_argument("--minutes", type=float, help="the long soak, its phases scaled to take about this many minutes")
    p.add_argument("--sharing", choices=("on", "off"), default="on",
                   help="fleet-shared polling (share_polling) on every node; default on")
    p.add_argument("--tls", action="store_true", help="every node's distribution over ecs_peers_tls")
    args = p.parse_args(argv)
    args.long = args.long or args.minutes is not None
    return args


def phases(long, sharing, minutes=None):
    """Seconds per phase: the short or long table, or the long one scaled so that the whole run
    takes about `minutes` (the partition unscaled). A run too short to scale to is an error."""
    if not long:
        out = dict(SHORT)
        if sharing:
            # With sharing the fleet makes one poller's calls (about 60 a minute to us-west-2), so
            # the phase's fixed churn (a node that joins polls alone until it is in the group; the
            # stopped task's poller is replaced) is a few calls against a back-off that saves about
            # one in five: over 25 s the two were the same size (60 against 59 fault-free, 00:36
            # UTC), over 60 s the back-off shows, as it does in the long soak (48 against 60 over
            # 180 s).
            out["throttle"] = 60
        return out
    if minutes is None:
        return dict(LONG)
    fixed = sum(LONG[k] for k in UNSCALED) + LONG_OVERHEAD_S
    scalable = sum(v for k, v in LONG.items() if k not in UNSCALED)
    least = (fixed + scalable * 0.25) / 60
    if minutes < least:
        sys.exit(f"soak.py: --minutes {minutes:g} is too short for the long soak: its unscaled parts take about "
                 f"{fixed / 60:.1f} min; give at least {least:.1f}, or leave --minutes out for the short soak")
    f = (minutes * 60 - fixed) / scalable
    return {k: v if k in UNSCALED else max(1, round(v * f)) for k, v in LONG.items()}


SHARING = True  # set by main() from --sharing; sharing_test.py uses Soak with this default
RATE = "fleet calls per minute"
INTERVAL_MS = 1000
REGIONS = ("eu-west-2", "us-west-2")
OTHER_TASKS = 120
# eu-west-2's cluster is shared: the whole cluster is listed (two pages) and the app's tasks are
# told apart by container name; us-west-2 lists the service.
PAGES = {"eu-west-2": 2, "us-west-2": 1}  # ListTasks pages per poll of each source
SOURCES = ('[[type: :ecs, region: "eu-west-2", cluster: "web", container: "app"], '
           '[type: :ecs, region: "us-west-2", cluster: "web", service: "api"]]')
# Lines that explain a lost link (Logger's console format: local time of day first).
STRATEGY_CUT = re.compile(r'^(\d\d:\d\d:\d\d\.\d\d\d) \[info\] \[libcluster:ecs\] disconnected from :"app@([\d.]+)"')
GLOBAL_CUT = re.compile(r"^(\d\d:\d\d:\d\d\.\d\d\d) \[warning\] 'global' at node :\"app@[\d.]+\" "
                        r'(?:requested disconnect from|disconnected) node :"app@([\d.]+)" in order to prevent overlapping partitions')


def poller_of(bed, ips, region):
    """With sharing: the ip of the one node of `ips` that polls `region`'s source here when every
    other names it as its poller, else None."""
    srcs = {ip: next((x for x in (bed.status(ip) or {}).get("sources", []) if x.get("region") == region), None)
            for ip in ips}
    here = [ip for ip, x in srcs.items() if x is not None and x.get("poller") is None]
    if len(here) == 1 and all(x is not None and x.get("poller") == node(here[0]) for ip, x in srcs.items() if ip != here[0]):
        return here[0]
    return None


def one_poller(bed, ips, region):
    """With sharing: exactly one of `ips` polls `region`'s source here and every other names it."""
    return poller_of(bed, ips, region) is not None


def listers(log, among, since, until=None):
    """{region: {ip: ListTasks calls}} of the nodes at `among` in [since, until) from the
    emulator's call log (`Bed.calls`). A poll always lists; other calls in a region (a TLS
    node's certificate renewal reads the CA's secret) are not polls."""
    out = {r: {} for r in REGIONS}
    for t, ip, op, region in log:
        if op == "ListTasks" and ip in among and region in out and since <= t and (until is None or t < until):
            out[region][ip] = out[region].get(ip, 0) + 1
    return out


def time_of_day(hms):
    h, m, s = hms.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def now_of_day():
    t = datetime.datetime.now()
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


class Soak:
    def __init__(self, bed):
        self.bed = bed
        self.live = {}          # ip -> (region, arn): tasks running in the API
        self.started_at = {}    # ip -> when its node started
        self.seen = set()       # (a, b): b was in a's Node.list at least once
        self.lost = {}          # (a, b) -> the open loss record, while b is missing from a's list
        self.losses = []        # every loss: {"at", "phase", "a", "b", "restored_after"}
        self.stops = []         # (time of day, ip) of planned stops and kills
        self.crashed = {}       # ip -> time of day its BEAM was killed
        self.listed = {}        # ip -> (region, arn): killed, its task still RUNNING in the API
        self.tls = None         # with --tls: start_node's erl_flags and env for TLS distribution
        self.drops = {}         # stopped ip -> {"phase", "polls_at_stop": {ip: poll}, "dropped": {ip: polls}}
        self.phase = "setup"

    # -- the emulator's fault list -------------------------------------------------------------
    def set_faults(self, entries):
        """Replaces the fault list; final pass-through entries count the other calls: one per
        region, after one for the CA's secret (TLS nodes read it to renew their certificates: not
        polling, so not in the call rates)."""
        counting = [{"operation": "GetSecretValue", "count": 10**9, "tag": "count:tls"}]
        counting += [{"operation": "*", "region": r, "count": 10**9, "tag": f"count:{r}"} for r in REGIONS]
        self.bed.faults("DELETE")
        self.bed.faults("POST", entries + counting)

    def calls(self):
        """API calls per region so far in this fault list (faulted or passed through)."""
        per = {r: 0 for r in REGIONS}
        for f in self.bed.faults():
            if f.get("region") in per:
                per[f["region"]] += f.get("hits", 0)
        return per

    # -- the cluster ---------------------------------------------------------------------------
    def start(self, region, task):
        self.bed.add_host(region, task["ip"])
        self.bed.start_node(task["ip"], sources=SOURCES, share_polling=SHARING, **(self.tls or {}))
        self.live[task["ip"]] = (region, task["arn"])
        self.started_at[task["ip"]] = time.monotonic()

    def stop(self, ip):
        """Stops a task as ECS does: StopTask (the emulator holds it DEACTIVATING: a draining
        peer), SIGTERM to its BEAM, which shuts down gracefully, then STOPPED. From then on every
        other node must drop it from its peers (its polls until then are counted in sample())."""
        region, arn = self.live.pop(ip)
        self.stops.append((now_of_day(), ip))
        self.bed.stop_task(region, arn)
        self.bed.terminate_node(ip)
        self.bed.advance_tasks(region, [arn], "STOPPED")
        self._stopped(ip, region)

    def crash(self, ip):
        """Kills the node's BEAM (SIGKILL: no shutdown, its links reset). Its task stays RUNNING
        in the API, as a crashed container's task stays listed until ECS stops it
        (`ecs_stops_crashed`); its links lost from here on are explained by the crash."""
        self.listed[ip] = self.live.pop(ip)
        self.crashed[ip] = now_of_day()
        self.stops.append((self.crashed[ip], ip))
        self.bed.kill_node(ip)

    def ecs_stops_crashed(self, ip):
        """ECS stops the crashed node's task (StopTask, then STOPPED: its container has exited).
        From then on every other node must drop it, as after a stop."""
        region, arn = self.listed.pop(ip)
        self.bed.stop_task(region, arn)
        self.bed.advance_tasks(region, [arn], "STOPPED")
        self._stopped(ip, region)

    def _stopped(self, ip, region):
        # Polls counted from here: the one in flight (begun before STOPPED) and the next.
        at = {o: (self.bed.status(o) or {}).get("poll", 0) for o in self.live
              if time.monotonic() - self.started_at[o] > 3}
        self.drops[ip] = {"phase": self.phase, "polls_at_stop": at, "dropped": {}, "reappeared": [],
                          "region": region, "stopped_at": time.time(), "dropped_at": {}}

    def running(self):
        """BEAMs running: a task stopped in the API whose BEAM runs on still polls AWS."""
        return sum(1 for h in self.bed.hosts.values() if h.get("proc") and h["proc"].poll() is None)

    def sample(self):
        now = time.monotonic()
        ips = [ip for ip in self.live if now - self.started_at[ip] > 3]
        statuses = {ip: self.bed.status(ip) or {"nodes": [], "poll": 0} for ip in ips}
        views = {ip: set(statuses[ip]["nodes"]) for ip in ips}
        # A killed node whose task is still listed: the others' links to it are sampled too.
        targets = ips + list(self.listed)
        for victim, d in self.drops.items():
            for o, p0 in d["polls_at_stop"].items():
                # Its BEAM has exited, so no Node.list has it: dropped means that the node's
                # last poll (its telemetry) no longer counts it among the peers.
                if (o in statuses and o not in d["dropped"] and statuses[o]["poll"] > p0
                        and statuses[o]["peers"] <= len(self.live) - 1):
                    d["dropped"][o] = statuses[o]["poll"] - p0
                    # Whose poll it applied: with sharing, the source's poller (a follower's poll
                    # counter also counts the updates its received results publish).
                    src = next((x for x in statuses[o].get("sources", []) if x.get("region") == d["region"]), {})
                    poller = src.get("poller")
                    d["dropped_at"][o] = (time.time(), poller.split("@", 1)[1] if poller else o)
                elif o in d["dropped"] and o in views and node(victim) in views[o] and statuses[o]["poll"] - p0 > 2:
                    # Within two polls a node whose own poll has not yet seen the stop may still
                    # reconnect the leaving node; after that, never.
                    d["reappeared"].append(o)
        for a in ips:
            for b in targets:
                if a == b:
                    continue
                pair = (a, b)
                if node(b) in views[a]:
                    self.seen.add(pair)
                    loss = self.lost.pop(pair, None)
                    if loss:
                        loss["restored_after"] = round(now - loss["mono"], 1)
                elif pair in self.seen and pair not in self.lost:
                    loss = {"at": now_of_day(), "mono": now, "phase": self.phase, "a": a, "b": b, "restored_after": None}
                    self.lost[pair] = loss
                    self.losses.append(loss)
        for ip, h in self.bed.hosts.items():
            if ip in self.live and h.get("proc") and h["proc"].poll() is not None:
                raise AssertionError(f"the BEAM of {node(ip)} exited: {self.bed.log(ip)[-2000:]}")

    def run_for(self, seconds, during=None):
        """Samples for `seconds`, running the `during` actions at their offsets; returns the
        node-minutes elapsed (running BEAMs integrated over time), to turn call counts into rates."""
        end = time.monotonic() + seconds
        actions = sorted((during or {}).items())
        t0 = last = time.monotonic()
        self.wall_minutes = seconds / 60
        node_seconds = 0.0
        while time.monotonic() < end:
            while actions and time.monotonic() - t0 >= actions[0][0]:
                actions.pop(0)[1]()
            self.sample()
            time.sleep(0.1)
            now = time.monotonic()
            node_seconds += self.running() * (now - last)
            last = now
        self.wall_minutes = (time.monotonic() - t0) / 60
        return node_seconds / 60

    def polls_until_dropped(self):
        """With sharing: {victim: {node: polls}}, the polls of the victim's region made by the node
        whose result each node applied (itself, or its poller), from STOPPED until the node
        dropped the victim, counted in the emulator's call log (`/_emu/calls`): ListTasks calls
        divided by the listing's pages (eu-west-2 lists the shared cluster: two pages), rounded
        up, so the second page of the poll in flight at STOPPED counts as that poll, as the
        status counter counts it without sharing."""
        log = self.bed.calls(min(d["stopped_at"] for d in self.drops.values()))[0]
        out = {}
        for victim, d in self.drops.items():
            pages = PAGES[d["region"]]
            out[victim] = {}
            for o, (at, who) in d["dropped_at"].items():
                per = {}
                for t, c, op, r in log:
                    if r == d["region"] and op == "ListTasks" and d["stopped_at"] < t <= at:
                        per[c] = per.get(c, 0) + 1
                # A node still naming the stopped node as its poller: count the busiest caller's
                # polls (an upper bound on whoever it got the result from).
                n = per.get(who, 0) if who != victim else max(per.values(), default=0)
                out[victim][o] = -(-n // pages)
        return out

    # -- why links were lost ---------------------------------------------------------------------
    def explain(self):
        """Each loss's cause: 'crash' (a link of a killed node, lost after its kill), else from
        both ends' logs within 3 s before it was sampled: 'strategy', 'global' (and the planned
        stop it follows, if any within 15 s), or 'unexplained'."""
        cuts = []  # (time of day, at ip, kind, peer ip)
        for ip in self.bed.hosts:
            for line in self.bed.log(ip).splitlines():
                for kind, rx in (("strategy", STRATEGY_CUT), ("global", GLOBAL_CUT)):
                    m = rx.match(line)
                    if m:
                        cuts.append((time_of_day(m.group(1)), ip, kind, m.group(2)))
        for loss in self.losses:
            a, b, t = loss["a"], loss["b"], loss["at"]
            near = [c for c in cuts if t - 3 <= c[0] <= t + 0.2 and c[1] in (a, b)]
            if any(x in self.crashed and self.crashed[x] <= t for x in (a, b)):
                loss["cause"] = "crash"
            elif any(k == "strategy" and {at, peer} == {a, b} for _, at, k, peer in near):
                loss["cause"] = "strategy"
            elif any(k == "global" for _, _, k, _ in near):
                stop = [ip for st, ip in self.stops if 0 <= t - st <= 15]
                loss["cause"] = "global"
                loss["after_stop_of"] = stop[-1] if stop else None
            else:
                loss["cause"] = "unexplained"
            loss.pop("mono", None)
            loss["at"] = str(datetime.timedelta(seconds=round(t, 1)))
        return self.losses

    def global_cuts(self):
        """Every line in which OTP global cut a link (from the nodes' logs), as (time of day, at,
        peer, healthy): healthy when neither end's stop had begun by then."""
        cuts = []
        for ip in self.bed.hosts:
            for line in self.bed.log(ip).splitlines():
                m = GLOBAL_CUT.match(line)
                if m:
                    t, peer = time_of_day(m.group(1)), m.group(2)
                    stopping = {s_ip for st, s_ip in self.stops if st <= t}
                    cuts.append((m.group(1), ip, peer, ip not in stopping and peer not in stopping))
        return sorted(cuts)


def main():
    global SHARING, RATE
    args = options(sys.argv[1:])
    SHARING = args.sharing == "on"
    RATE = "fleet calls per minute" if SHARING else "calls per node per minute"
    PHASES = phases(args.long, SHARING, args.minutes)
    require_root_and_netns()
    checks = Scenarios()
    check = checks.check
    began = time.monotonic()

    with Bed(interval_ms=INTERVAL_MS) as bed:
        bed.task_lifecycle(stop="hold")
        soak = Soak(bed)
        if args.tls:
            # Only a TLS run needs the CA's library (cryptography), so only it imports tls_test.
            from tls_test import CA, tls_env, tls_flags
            soak.tls = {"erl_flags": tls_flags(), "env": tls_env(CA("ecs-peers soak CA").store(bed, "ecs-peers/soak-ca"))}
        print(f"soak on test bed {bed.prefix} ({'long' if args.long else 'short'}: {PHASES}; sharing "
              f"{'on' if SHARING else 'off'}; distribution {'TLS' if args.tls else 'TCP'}); logs in {bed.work}", flush=True)
        tasks = bed.seed({"eu-west-2": 2, "us-west-2": 2},
                         others={"eu-west-2": [{"family": "batch", "count": OTHER_TASKS, "container": "worker"}]})
        for region in REGIONS:
            for t in tasks[region]:
                soak.start(region, t)
        wait_until(lambda: fully_meshed(bed, list(soak.live)), 90, "the cluster to form")

        def sample_until(pred, timeout):
            """Samples until `pred()` holds (its value) or `timeout` s have passed (None): a
            check reports a wait that ends without it."""
            try:
                return wait_until(lambda: soak.sample() or pred(), timeout, "")
            except AssertionError as e:
                if "timed out" not in str(e):
                    raise
                return None

        def agreed():
            """With sharing: one poller per source among the running nodes."""
            return all(one_poller(bed, list(soak.live), r) for r in REGIONS)

        if SHARING:
            # The baseline is the steady state: one poller per source, and no follower polling on
            # its own (a member that just joined does until the poller's results reach it).
            quiet = {"since": None}

            def settled():
                now = time.monotonic()
                ok = soak.sample() or agreed() and not any(
                    s.get("poller_silent") for ip in soak.live for s in (bed.status(ip) or {}).get("sources", []))
                quiet["since"] = (quiet["since"] or now) if ok else None
                return ok and now - quiet["since"] >= 10 * INTERVAL_MS / 1000

            wait_until(settled, 120, "one poller per source and no silent follower for ten intervals")
        rates, stalled, tls_reads = {}, {}, {}

        def phase(name, faults, during=None):
            soak.phase = name
            soak.set_faults(faults)
            node_minutes = soak.run_for(PHASES[name], during)
            calls = soak.calls()
            # Without sharing every node polls every region: calls to a region per node per
            # minute. With sharing one node per source does, whatever the number of nodes: the
            # fleet's calls to a region per minute.
            per = node_minutes if not SHARING else soak.wall_minutes
            rates[name] = {r: round(calls.get(r, 0) / per) for r in REGIONS}
            listed = bed.faults()
            tls_reads[name] = sum(f.get("hits", 0) for f in listed if f.get("tag") == "count:tls")
            if name == "stall":
                stalled["calls"] = sum(f.get("hits", 0) for f in listed if f.get("tag") == "stall")
            print(f"  phase {name:<13} {PHASES[name]:>4}s  {RATE}, per region: {rates[name]}  "
                  f"links lost so far: {len(soak.losses)}", flush=True)

        phase("baseline", [])
        # 30%: per region, 7 calls pass, 3 are throttled, again and again (enough for the phase).
        throttle = []
        for _ in range(PHASES["throttle"] * 3 // 10 + 10):
            for r in REGIONS:
                throttle += [{"operation": "ListTasks", "region": r, "count": 7},
                             {"operation": "ListTasks", "region": r, "count": 3, "status": 400,
                              "code": "ThrottlingException", "message": "Rate exceeded"}]
        new_task = {}
        phase("throttle", throttle, during={
            PHASES["throttle"] * 0.3: lambda: new_task.update(t=bed.run_task("eu-west-2")) or soak.start("eu-west-2", new_task["t"]),
            PHASES["throttle"] * 0.6: lambda: soak.stop(tasks["us-west-2"][1]["ip"]),
        })
        # The second of eu-west-2's two ListTasks pages stalls past poll_timeout (2 s), again and
        # again: calls alternate pass, stall (concurrent nodes may get a first page stalled).
        stall = []
        for _ in range(PHASES["stall"] * 3):
            stall += [{"operation": "ListTasks", "region": "eu-west-2", "count": 1},
                      {"operation": "ListTasks", "region": "eu-west-2", "count": 1, "delay_ms": 2500, "tag": "stall"}]
        phase("stall", stall)
        phase("blackhole", [{"operation": "*", "region": "us-west-2", "count": 10**6, "delay_ms": 2500}], during={
            PHASES["blackhole"] * 0.3: lambda: soak.stop(new_task["t"]["ip"]),
        })
        # A burst of 20 per region, then (in a long phase) 40 calls let through before the next:
        # about one burst per 30 s at one poller's rate.
        burst, bursts = [], max(1, PHASES["5xx"] // 30)
        for i in range(bursts):
            for r in REGIONS:
                burst.append({"operation": "*", "region": r, "count": 20, "status": 500, "code": "ServerException",
                              "message": "injected"})
                if i < bursts - 1:
                    burst.append({"operation": "*", "region": r, "count": 40})
        phase("5xx", burst)

        # A crash: with sharing, of the node elected to poll eu-west-2 (another must take over);
        # without, of an eu-west-2 node. ECS stops its task a while later, and starts another.
        crash_region = "eu-west-2"
        if SHARING:
            victim = sample_until(lambda: poller_of(bed, list(soak.live), crash_region), 60)
            assert victim, f"no agreed {crash_region} poller to kill within 60 s after the 5xx phase"
        else:
            victim = next(ip for ip, (r, _) in soak.live.items() if r == crash_region)
        killed = {"ip": victim}

        def kill():
            killed["viewers"] = {a for a in soak.live if a != victim and (a, victim) in soak.seen}
            killed["t"] = time.time()
            soak.crash(victim)

        def ecs_stops_and_replaces():
            soak.ecs_stops_crashed(victim)
            sample_until(lambda: len(soak.drops[victim]["dropped"]) == len(soak.drops[victim]["polls_at_stop"]), 30)
            # The service's replacement starts once the task is gone from every node's peers, so
            # that the drop above is not read from a peer count the replacement has grown.
            t = bed.run_task(crash_region)
            killed["replacement"] = t["ip"]
            soak.start(crash_region, t)

        phase("poller_killed", [], during={0: kill, CRASH_LISTED_S["long" if args.long else "short"]: ecs_stops_and_replaces})
        if SHARING:
            # Taken over: the first listing of the source by a node that was running at the kill
            # (not the replacement, which polls on its own until it is in the group).
            survivors = set(soak.live) - {killed.get("replacement")}
            first = min((t for t, ip, op, r in bed.calls(killed["t"])[0]
                         if op == "ListTasks" and r == crash_region and ip in survivors), default=None)
            killed["takeover_s"] = round(first - killed["t"], 2) if first else None
            t0 = time.monotonic()
            killed["agreed"] = bool(sample_until(agreed, 60))
            killed["agreed_after_phase_s"] = round(time.monotonic() - t0, 1)

        # A partition between the regions, shorter than net_ticktime: no link may drop, both sides
        # poll both regions (each side's nodes reach AWS, not the other side).
        part = {}

        def cut():
            part["t"] = time.time()
            # Each source's poller is in its own region; every node on the other side is cut off
            # from it and polls the source itself (docs/sharing.md: poller_silent).
            part["cut_off"] = {r: sum(1 for _, (region, _) in soak.live.items() if region != r) for r in REGIONS}
            bed.partition()

        try:
            phase("partition", [], during={0: cut})
        finally:
            if "t" in part:
                part["healed"] = time.time()
                bed.heal()
        log = bed.calls(part["t"])[0]
        polled = {r: {s: [t for t, ip, op, region in log if op == "ListTasks" and region == r and t < part["healed"]
                          and ip in soak.live and bed.hosts[ip]["region"] == s] for s in REGIONS} for r in REGIONS}
        part["both_sides"] = all(polled[r][s] for r in REGIONS for s in REGIONS)
        if part["both_sides"]:
            part["both_sides_after_s"] = round(max(min(polled[r][s]) for r in REGIONS for s in REGIONS) - part["t"], 1)
        if SHARING:
            def flat():
                """One node lists each region in a window of three intervals begun two after healing."""
                now = time.time()
                since = max(part["healed"] + 2 * INTERVAL_MS / 1000, now - 3 * INTERVAL_MS / 1000)
                if now - since < 3 * INTERVAL_MS / 1000:
                    return None
                calls = listers(bed.calls(since)[0], set(soak.live), since)
                return now if all(len(calls[r]) == 1 for r in REGIONS) else None

            flat_at = sample_until(flat, 60)
            part["flat_after_heal_s"] = round(flat_at - 3 * INTERVAL_MS / 1000 - part["healed"], 1) if flat_at else None
        # Faults over: a stopped task is dropped everywhere within two polls.
        soak.phase = "recover"
        soak.set_faults([])
        soak.run_for(3)
        last = next(ip for ip, (r, _) in soak.live.items() if r == "eu-west-2" and ip != killed.get("replacement"))
        soak.stop(last)
        wait_until(lambda: soak.sample() or len(soak.drops[last]["dropped"]) == len(soak.drops[last]["polls_at_stop"]),
                   30, "the stopped task to be dropped")
        soak.run_for(PHASES["recover"])
        restarts = sum((bed.status(ip) or {}).get("restarts", 0) for ip in soak.live)
        # The strategy's restarts are counted apart; a crashed helper (a diagnosis) is a crash too.
        crashed = crashed_processes(bed)
        if SHARING:
            for v, polls in soak.polls_until_dropped().items():
                soak.drops[v]["dropped"] = polls
        drops = {f"{node(v)} stopped during {d['phase']}": d["dropped"] for v, d in soak.drops.items()}
        not_dropped = {v: sorted(set(d["polls_at_stop"]) - set(d["dropped"])) for v, d in soak.drops.items()}
        losses = soak.explain()
        by_cause = {c: [x for x in losses if x["cause"] == c] for c in ("strategy", "global", "unexplained", "crash")}
        cuts = soak.global_cuts()
        healthy_cuts = [c for c in cuts if c[3]]

        print("figures: " + json.dumps({
            ("fleet_calls_per_min" if SHARING else "calls_per_min_per_node"): rates, "stalled_listing_calls": stalled.get("calls"),
            "links_lost": {c: len(v) for c, v in by_cause.items()},
            "global_cut_lines": {"between_healthy_nodes": len(healthy_cuts), "with_a_stopping_node": len(cuts) - len(healthy_cuts)},
            "longest_loss_s": max((x["restored_after"] or 0 for x in losses), default=0),
            "polls_to_drop_a_stopped_task": drops, "strategy_restarts": restarts,
            "crashed_processes": sum(len(v) for v in crashed.values()),
            "poller_killed": {k: node(v) if k in ("ip", "replacement") else v for k, v in killed.items()
                              if k not in ("viewers", "t")},
            "partition": {k: v for k, v in part.items() if k not in ("t", "healed", "cut_off")},
            "ca_secret_reads": sum(tls_reads.values()) if args.tls else None,
            "run_s": round(time.monotonic() - began)}), flush=True)
        for x in losses:
            print(f"  link lost {x['at']} ({x['phase']}): {node(x['a'])} -/- {node(x['b'])}, cause {x['cause']}"
                  + (f" after the stop of {node(x['after_stop_of'])}" if x.get("after_stop_of") else "")
                  + f", restored after {x['restored_after']} s", flush=True)
        for at, ip, peer, healthy in cuts:
            print(f"  global cut at {at}: {node(ip)} / {node(peer)}" + ("" if healthy else " (a stopping node)"), flush=True)

        check("the strategy never disconnected a running task's node (no spurious disconnect)", not by_cause["strategy"],
              f"{len(by_cause['strategy'])} by the strategy, {len(by_cause['global'])} by OTP global, "
              f"{len(by_cause['unexplained'])} unexplained")
        check("no link lost without a cause", not by_cause["unexplained"], f"{len(by_cause['unexplained'])} unexplained")
        noticed = {x["a"] for x in by_cause["crash"] if x["b"] == killed["ip"]}
        check("the killed node's links are lost (an explained loss) on every node connected to it, and no other",
              bool(noticed) and noticed == killed["viewers"] and len(noticed) == len(by_cause["crash"]),
              f"lost by {sorted(map(node, noticed))} of {sorted(map(node, killed['viewers']))}; "
              f"{len(by_cause['crash'])} losses explained by the kill")
        check("OTP global cut no link between healthy nodes (prevent_overlapping_partitions)",
              not by_cause["global"] and not healthy_cuts,
              f"{len(by_cause['global'])} sampled losses by global, {len(healthy_cuts)} global cut lines between "
              f"healthy nodes in the logs ({len(cuts) - len(healthy_cuts)} with a stopping node)")
        check("no crash", restarts == 0 and not crashed,
              f"strategy restarts: {restarts}; every BEAM alive but the killed one; processes crashed "
              f"(logged by OTP): {json.dumps(crashed) if crashed else 0}")
        check("every stopped task is dropped by every node", not any(not_dropped.values()), json.dumps(not_dropped))
        back = {v: sorted(set(d["reappeared"])) for v, d in soak.drops.items() if d["reappeared"]}
        check("a dropped task's node is never connected again after two polls", not back, json.dumps(back))
        after = soak.drops[last]["dropped"]
        check("a stopped task is dropped within two polls after the faults", max(after.values()) <= 2, str(after))
        during = next(d["dropped"] for d in soak.drops.values() if d["phase"] == "blackhole")
        check("a black-holed region delays nobody: an eu-west-2 task stopped meanwhile is dropped within two polls",
              max(during.values()) <= 2, str(during))
        dropped = soak.drops[killed["ip"]]["dropped"]
        check("a killed node's task is dropped within two polls of ECS stopping it", max(dropped.values(), default=99) <= 2,
              str(dropped))
        if SHARING:
            check(f"another node takes over polling {crash_region} when its poller is killed",
                  killed["takeover_s"] is not None, f"first listing by another node {killed['takeover_s']} s after the kill")
            check("one poller per source again after the kill", killed["agreed"],
                  f"agreed {killed['agreed_after_phase_s']} s after the phase (bound 60 s)")
        check("during the partition both sides poll both regions", part["both_sides"],
              json.dumps({f"{r} from the {s} side": len(polled[r][s]) for r in REGIONS for s in REGIONS}))
        if SHARING:
            check("one node polls each region again after the partition heals", part["flat_after_heal_s"] is not None,
                  f"within {part['flat_after_heal_s']} s of healing (bound 60 s)")
        # During the partition, with sharing, a source is polled by its poller and by every node cut
        # off from it: that many fleets' rate.
        pollers = {p: {r: 1 + part["cut_off"][r] if p == "partition" and SHARING else 1 for r in REGIONS} for p in rates}
        storms = {f"{p}/{r}": v[r] for p, v in rates.items() for r in REGIONS
                  if v[r] > rates["baseline"][r] * 1.5 * pollers[p][r]}
        check(f"no retry storm: no region's {RATE} exceed 1.5x its fault-free rate (during the partition, with sharing, "
              f"1.5x per node polling it: its poller and each node cut off from it, {pollers['partition']})",
              not storms, f"baseline {rates['baseline']}, over: {storms or 'none'}")
        check("throttling backs off", all(rates["throttle"][r] < rates["baseline"][r] for r in REGIONS),
              f"{rates['throttle']} {RATE} under 30% throttling vs {rates['baseline']} fault-free")
        check("the cluster is whole at the end", fully_meshed(bed, list(soak.live)), ", ".join(node(ip) for ip in soak.live))

    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
