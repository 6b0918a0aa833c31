"""End-to-end: the cluster explains itself. Three BEAM nodes (two in eu-west-2, one in us-west-2)
cluster through EcsPeers.Strategy; one of them is broken, one way at a time, each restored before
the next:

  1. its distribution ports dropped by iptables in its task namespace (inbound to 9100-9110, and
     the answers to its own connections from those ports: it reaches nobody, nobody reaches it;
     its EPMD still answers);
  2. restarted with another cookie.

For each, every other node must log the right diagnosis of the broken node (`dist_port_blocked`,
then `cookie_mismatch`) with its fix, exactly once, within three of its own polls of its first
failed connect to the broken node after that node is up again (plus the checks' own timeout: one
2 s connection attempt for a dropped port); its `EcsPeers.status/1` and its
`[:ecs_peers, :cluster, :connections]` telemetry must show the gap (the broken node expected, not
connected, unreachable with that diagnosis); the diagnosis must be the one `ecs-peers doctor`
gives that node from a host inside the bed (the same code, problem and fix); and the broken node,
alone while discovery lists the others, must log so once. After each repair, the others log the
node connected again and the cluster is whole.

The bed is doctor_test.py's (testbed.Bed, a doctor host, its `doctor` run); the BEAMs are
tests/e2e/node.exs. Run as root after `mix test` has compiled elixir/_build/test:
python3 tests/e2e/explain_test.py. Prints one line per scenario and `N passed, N failed`.
"""
import math
import re
import sys
import time

from doctor_test import doctor
from scenarios import Scenarios
from testbed import Bed, joined, node, require_root_and_netns, wait_until

INTERVAL_MS = 1000
# Each node polls alone (`share_polling: false`): a node's polls are counted by its own ListTasks
# calls at the emulator, which a follower of fleet-shared polling does not make.
ALONE = {"share_polling": False}
DIST_PORTS = "9100:9110"  # testbed.start_node's inet_dist_listen_min/max
# The checks' own timeout for one connection attempt that gets no answer (DoctorOptions::default).
CHECK_TIMEOUT_S = 2
# Polls allowed for a diagnosis after the first failed connect: three, plus the checks' timeout
# in polls (jitter 0.1: a poll may come every 0.9 intervals).
POLLS_ALLOWED = {"dist_port_blocked": 3 + math.ceil(CHECK_TIMEOUT_S * 1000 / (0.9 * INTERVAL_MS)),
                 "cookie_mismatch": 3}


def main():
    require_root_and_netns()
    scenario = Scenarios()
    with Bed(interval_ms=INTERVAL_MS) as bed:
        print(f"test bed {bed.prefix}: logs in {bed.work}", flush=True)
        tasks = bed.seed({"eu-west-2": 2, "us-west-2": 1})
        ips = []
        for region, ts in tasks.items():
            for t in ts:
                bed.add_host(region, t["ip"])
                bed.start_node(t["ip"], **ALONE)
                ips.append(t["ip"])
        doc = bed.add_doctor_host()
        victim = tasks["eu-west-2"][1]["ip"]
        others = [ip for ip in ips if ip != victim]

        def meshed():
            wait_until(lambda: joined(bed, ips), 90, "every node to see every other and find it in its own poll")
            return "nodes: " + ", ".join(node(i) for i in ips)

        scenario("the nodes mesh", meshed)

        def fw(action):
            ns = bed.hosts[victim]["ns"]
            for rule in (("--dport", DIST_PORTS), ("--sport", DIST_PORTS)):
                bed.ns_exec(ns, "iptables", "-w", action, "INPUT", "-p", "tcp", *rule, "-j", "DROP")

        def restart(**kw):
            bed.kill_node(victim)
            bed.start_node(victim, **ALONE, **kw)

        def broken(code, setup, repair):
            def run():
                repaired = {"done": False}  # by the check itself, once the diagnosis is proven
                try:
                    return check(repaired)
                finally:
                    if not repaired["done"]:
                        repair()
                        wait_until(lambda: joined(bed, ips), 90, "the cluster to be whole again")

            def check(repaired):
                # Where each log stood before the break: only what follows is read.
                mark = {ip: len(bed.log(ip)) for ip in ips}
                setup()
                wait_until(lambda: (bed.status(victim) or {}).get("poll", 0) > 0, 60, f"{node(victim)} to run again")
                up = {ip: len(bed.log(ip)) for ip in others}
                failed_at, said_at = {}, {}
                line = f"cannot connect to {node(victim)} (eu-west-2) since "
                tag = f"[{code}] "

                def explained():
                    for ip in others:
                        log, now = bed.log(ip), time.time()
                        if ip not in failed_at and f'unable to connect to :"{node(victim)}"' in log[up[ip]:]:
                            failed_at[ip] = now
                        if ip not in said_at and any(line in x and tag in x for x in log[mark[ip]:].splitlines()):
                            said_at[ip] = now
                    return len(said_at) == len(others) and len(failed_at) == len(others)

                wait_until(explained, 90, f"every other node to fail to connect to {node(victim)} and diagnose it")
                # Polls counted at the emulator (each poll is one eu-west-2 ListTasks call of the
                # node's): the node's own counter stalls while a connect blocks its strategy.
                calls = bed.calls(min(failed_at.values()) - 1)[0]
                between = {ip: sum(1 for t, who, op, region in calls
                                 if who == ip and op == "ListTasks" and region == "eu-west-2"
                                 and failed_at[ip] < t <= said_at[ip]) for ip in others}
                late = {node(ip): n for ip, n in between.items() if n > POLLS_ALLOWED[code]}
                assert not late, f"diagnosed more than {POLLS_ALLOWED[code]} polls after the first failed connect: {late}"

                # The gap, in status/1 and in the telemetry, as the doctor's diagnosis.
                _, report = doctor(bed, doc)
                by_doctor = [d for d in report["diagnoses"] if d["subject"] == f"{node(victim)} (eu-west-2)"]
                assert [d["code"] for d in by_doctor] == [code], f"the doctor says {report['diagnoses']}"
                want = by_doctor[0]

                def gap_shown(ip):
                    s = bed.status(ip)
                    # EcsPeers.status/1: the victim expected, not connected, unreachable with the diagnosis.
                    gone = [u for u in s.get("unreachable") or [] if u["node"] == node(victim)]
                    if not (node(victim) in s["expected"] and node(victim) not in s["connected"]
                            and gone and gone[0]["code"] == code):
                        return False
                    # The telemetry: two expected, one connected, the victim unreachable with it.
                    conn = s.get("connections") or {}
                    told = [u for u in conn.get("unreachable_peers") or [] if u["node"] == node(victim)]
                    if not ((conn.get("expected"), conn.get("connected"), conn.get("unreachable")) == (2, 1, 1)
                            and told and told[0]["code"] == code):
                        return False
                    for u in (gone[0], told[0]):
                        assert (u["reason"], u["fix"]) == (want["problem"], want["fix"]), \
                            f"{node(ip)}'s diagnosis {u} is not the doctor's {want}"
                        assert u["since"] and u["polls"] > 2, u
                    return True

                for ip in others:
                    wait_until(lambda: gap_shown(ip), 30, f"{node(ip)}'s status and telemetry to show the gap")
                    said = [x for x in bed.log(ip)[mark[ip]:].splitlines() if line in x and tag in x][0]
                    assert said.endswith(f"[{code}] {want['problem']}. Fix: {want['fix']}"), said

                # The broken node, alone, says so (its connects block for seconds: wait for it).
                alone_line = "this node is alone: connected to none of the 2 peers"
                wait_until(lambda: alone_line in bed.log(victim), 90, f"{node(victim)} to say it is alone")
                # Said once: six more polls (two more checks) add no line.
                polls = {ip: bed.status(ip)["poll"] for ip in others}
                wait_until(lambda: all(bed.status(ip)["poll"] >= polls[ip] + 6 for ip in others), 60, "six more polls")
                times = {node(ip): sum(1 for x in bed.log(ip)[mark[ip]:].splitlines() if line in x and tag in x)
                         for ip in others}
                assert all(n == 1 for n in times.values()), f"the diagnosis was logged {times} times"
                alone = bed.log(victim).count(alone_line)
                assert alone == 1, f"{node(victim)} said it is alone {alone} times"
                other_codes = sorted({m.group(1) for ip in others for x in bed.log(ip)[mark[ip]:].splitlines()
                                      if line in x and tag not in x
                                      for m in [re.search(r"polls\): \[(\w+)\]", x)] if m})

                repaired["done"] = True
                repair()
                wait_until(lambda: joined(bed, ips), 90, "the cluster to be whole again")
                again = f'connected to :"{node(victim)}" again'
                wait_until(lambda: all(again in bed.log(ip)[mark[ip]:] for ip in others), 30,
                           "the others to log the node connected again")
                return (f"polls from the first failed connect to the diagnosis: "
                        f"{ {node(ip): n for ip, n in between.items()} }; logged once each; "
                        f"the doctor's diagnosis; {node(victim)} said it is alone once"
                        + (f"; while it restarted: {other_codes}" if other_codes else ""))

            return run

        scenario("a node whose distribution ports are dropped is diagnosed by every other node, once, with its fix",
                 broken("dist_port_blocked", lambda: (bed.kill_node(victim), fw("-A"), bed.start_node(victim, **ALONE)),
                        lambda: (bed.kill_node(victim), fw("-D"), bed.start_node(victim, **ALONE))))
        scenario("a node with another cookie is diagnosed by every other node, once, with its fix",
                 broken("cookie_mismatch", lambda: restart(cookie="not-the-cookie"), lambda: restart()))
    return scenario.summary()


if __name__ == "__main__":
    started = time.monotonic()
    rc = main()
    print(f"explain_test: {time.monotonic() - started:.0f} s", flush=True)
    sys.exit(rc)
