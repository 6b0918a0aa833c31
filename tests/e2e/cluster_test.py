"""End-to-end: real BEAM nodes, one per ECS task, in network namespaces on two "VPCs" (eu-west-2 and
us-west-2) joined by peering, cluster through EcsPeers.Strategy (libcluster contract double,
cargo-built NIF) against the project's AWS emulator (tests/awsemu).

Every node here polls alone (`share_polling: false`): the bounds below are counted in each node's
own polls (its telemetry's poll events), and a node that shares also counts an update it publishes
at once for a received result, so its count is not its polls. The same bounds with sharing on (the
default), counted in the source's polls at the emulator, are sharing_test.py's and the soak's.

Two test beds, one after the other. The first names every source; it proves, in order:
  1. every node connects to every other, across both regions;
  2. a new task joins;
  3. a task stopped in the emulator is disconnected everywhere within two polls (counted with each
     node's own poll counter), and, knowing it has left, does not pull itself back in;
  4. with the emulator stopped (SIGSTOP) for three polls, nobody is disconnected;
  5. a BEAM node killed while its task is still listed is retried by the others, who neither crash
     nor lose each other;
  6. a node registered as worker@... is found under that name with node_names: "epmd".
The second is zero-config: each node's own source is `cluster: :auto`, read from its task's
metadata endpoint v4 (ECS_CONTAINER_METADATA_URI_V4, served by the emulator, reached from the task
namespace), and only the other region is named; the emulator holds stopped tasks in
DEACTIVATING/STOPPING until the test moves them on. It proves:
  7. the zero-config nodes mesh across both regions, each own-region source resolved from the
     metadata; the CLI's --from-metadata, run inside a task namespace, finds the same peers;
     without the metadata (unset, 404, the agent's 4xx text, unreachable) the auto source fails
     and names the fix while the named region still answers;
  8. drain: a stopped task whose BEAM runs on stays connected on every other node for at least
     three polls while ECS reports it STOPPING (the CLI reports it draining on each poll), and is
     dropped everywhere within two polls once ECS reports it STOPPED; after ECS's stop sequence
     (SIGTERM while STOPPING) the draining node, gone, is not connected anew, and is forgotten
     once STOPPED.
The third clusters without libcluster: every node runs the child EcsPeers.Cluster in its
application's supervision tree (E2E_CLUSTER=child), as a Phoenix >= 1.7.11 app would. It proves:
  9. the nodes mesh across both regions; a task stopped as ECS stops it (StopTask, SIGTERM to its
     BEAM, STOPPED) leaves the others meshed and is dropped from their peers, and OTP's global cut
     no link anywhere (no "prevent overlapping partitions" line in any node's log).

Run as root, after `mix test` has compiled elixir/_build/test: python3 tests/e2e/cluster_test.py
Prints one line per scenario and `N passed, N failed`; exits non-zero when any failed.
"""
import json
import os
import subprocess
import sys
import time

from scenarios import Scenarios
from testbed import (ENDPOINT, ROOT, Bed, cuts_a_link_of, fully_meshed, global_cuts, joined, knows, node,
                     require_root_and_netns, sees, wait_until)

INTERVAL_MS = 1000
BIN = os.path.join(ROOT, "target", "debug", "ecs-peers")
CLI_ENV = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
# Zero-config: a node's own cluster, region and family come from its task metadata; it names only
# the other region (the README's Phoenix example).
AUTO_SOURCES = {
    "eu-west-2": '[[type: :ecs, cluster: :auto], [type: :ecs, region: "us-west-2", cluster: "web", service: "api"]]',
    "us-west-2": '[[type: :ecs, cluster: :auto], [type: :ecs, region: "eu-west-2", cluster: "web", service: "api"]]',
}
OTHER_REGION = {"eu-west-2": "us-west-2", "us-west-2": "eu-west-2"}


def main():
    require_root_and_netns()
    scenario = Scenarios()
    named_sources(scenario)
    zero_config(scenario)
    without_libcluster(scenario)
    return scenario.summary()


def named_sources(scenario):
    with Bed(interval_ms=INTERVAL_MS) as bed:
        print(f"test bed {bed.prefix}: router namespace {bed.router}, emulator on 10.200.0.1:5000, "
              f"logs in {bed.work}", flush=True)
        tasks = bed.seed({"eu-west-2": 2, "us-west-2": 1})
        eu_a, eu_b = tasks["eu-west-2"]
        us_a = tasks["us-west-2"][0]
        live = {}  # ip -> (region, arn)
        for region, t in (("eu-west-2", eu_a), ("eu-west-2", eu_b), ("us-west-2", us_a)):
            bed.add_host(region, t["ip"])
            bed.start_node(t["ip"], share_polling=False)
            live[t["ip"]] = (region, t["arn"])

        def all_connect():
            ips = list(live)
            wait_until(lambda: joined(bed, ips), 90, "every node to see every other and find it in its own poll")
            return "nodes: " + ", ".join(node(i) for i in ips)

        scenario("all nodes connect across both regions", all_connect)

        def new_task_joins():
            t = bed.run_task("us-west-2")
            bed.add_host("us-west-2", t["ip"])
            bed.start_node(t["ip"], share_polling=False)
            live[t["ip"]] = ("us-west-2", t["arn"])
            # Found by every other node's own poll, not only connected (it dials them itself).
            wait_until(lambda: joined(bed, list(live)), 90, f"{node(t['ip'])} to join everyone")
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
            bed.start_node(worker, basename="worker", node_names="epmd", share_polling=False)
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


class Watch:
    """`ecs-peers watch --json --every-poll` running in a task namespace: its JSON Lines, parsed."""

    def __init__(self, bed, ip, args):
        self.path = os.path.join(bed.work, f"watch-{ip}.jsonl")
        self.err = os.path.join(bed.work, f"watch-{ip}.log")
        env = dict(CLI_ENV, ECS_CONTAINER_METADATA_URI_V4=bed.metadata_uri(ip))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", bed.hosts[ip]["ns"], BIN, "watch", "--json", "--every-poll", *args,
             "--basename", "app", "--endpoint-url", ENDPOINT, "--interval", f"{INTERVAL_MS}ms",
             "--max-attempts", "1"],
            stdout=open(self.path, "w"), stderr=open(self.err, "w"), env=env)

    def events(self):
        with open(self.path) as f:
            lines = f.read().splitlines()
        # The last line may be half written.
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out

    def snapshots(self):
        return [e["snapshot"] for e in self.events() if e["event"] == "snapshot"]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def peer(snapshot, name):
    return next((p for p in snapshot["peers"] if p["node"] == name), None)


def zero_config(scenario):
    with Bed(interval_ms=INTERVAL_MS) as bed:
        print(f"zero-config test bed {bed.prefix}: logs in {bed.work}", flush=True)
        # A stopped task stays DEACTIVATING/STOPPING until the test moves it on (as during a
        # real task's stop timeout), not longer than the whole run.
        bed.task_lifecycle(stop="hold", stop_hold_s=600)
        tasks = bed.seed({"eu-west-2": 2, "us-west-2": 1})
        eu_a, eu_b = tasks["eu-west-2"]
        us_a = tasks["us-west-2"][0]
        region_of = {eu_a["ip"]: "eu-west-2", eu_b["ip"]: "eu-west-2", us_a["ip"]: "us-west-2"}
        for ip, region in region_of.items():
            bed.add_host(region, ip)
            bed.metadata_uri(ip)  # the emulator gave every task a metadata endpoint
            bed.start_node(ip, sources=AUTO_SOURCES[region], share_polling=False)
        ips = list(region_of)

        def own_source(ip):
            """The node's answering source for its own region: only the metadata can have named it."""
            own = [src for src in (bed.status(ip) or {"sources": []})["sources"]
                   if src["id"].startswith(f"ecs:{region_of[ip]}/") and src["ok"]]
            return own[0]["id"] if len(own) == 1 else None

        def zero_config_nodes_mesh():
            # Meshed, and every node has polled its own region (a node that has not polled yet can
            # look meshed because the others connected to it).
            wait_until(lambda: joined(bed, ips) and all(own_source(ip) for ip in ips), 90,
                       "every zero-config node to see every other, each through its own-region source")
            resolved = {node(ip): own_source(ip) for ip in ips}
            # The CLI, zero-config inside a task namespace, finds the same peers and itself.
            me = eu_a["ip"]
            r = bed.ns_exec(bed.hosts[me]["ns"], BIN, "list", "--json", "--from-metadata", "--ecs", "us-west-2/web/api",
                            "--basename", "app", "--endpoint-url", ENDPOINT, "--max-attempts", "1", check=False,
                            env=dict(CLI_ENV, ECS_CONTAINER_METADATA_URI_V4=bed.metadata_uri(me)))
            assert r.returncode == 0, f"ecs-peers list --from-metadata exited {r.returncode}: {r.stderr}"
            snapshot = json.loads(r.stdout)
            got = sorted(p["node"] for p in snapshot["peers"])
            assert got == sorted(node(ip) for ip in ips if ip != me), f"list --from-metadata in {node(me)}'s task: {got}"
            assert (snapshot.get("local") or {}).get("ip") == me, f"list --from-metadata: local is {snapshot.get('local')}"
            return f"own-region sources from the metadata: {resolved}; list --from-metadata: {got}"

        scenario("zero-config nodes (cluster: :auto) mesh across both regions", zero_config_nodes_mesh)

        def metadata_failures_name_the_fix():
            me = eu_a["ip"]
            task_id = eu_a["arn"].rsplit("/", 1)[-1]
            cases = {
                "unset": None,
                "an unknown task (404)": f"{ENDPOINT}/v4/{'0' * 32}",
                "the agent's 4xx answer": bed.metadata_uri(me),
                "unreachable": "http://10.200.0.1:5999/v4/" + task_id,  # nothing listens there
            }
            bed.emulator("POST", "/_emu/metadata-fault",
                         {"task": task_id, "status": 400, "body": "unable to associate '172.17.0.5' with task"})
            try:
                seen = {}
                for case, uri in cases.items():
                    env = dict(CLI_ENV)
                    if uri:
                        env["ECS_CONTAINER_METADATA_URI_V4"] = uri
                    r = bed.ns_exec(bed.hosts[me]["ns"], BIN, "list", "--json", "--from-metadata", "--ecs", "us-west-2/web/api",
                                    "--basename", "app", "--endpoint-url", ENDPOINT, "--max-attempts", "1",
                                    check=False, env=env)
                    assert r.returncode == 3, f"{case}: exit {r.returncode} (3 = some sources failed): {r.stderr}"
                    snapshot = json.loads(r.stdout)
                    failing = [src for src in snapshot["sources"] if not src["ok"]]
                    assert len(failing) == 1 and "task-metadata" in failing[0]["error"] \
                        and "ECS_CONTAINER_METADATA_URI_V4" in failing[0]["error"], f"{case}: {snapshot['sources']}"
                    assert [p["node"] for p in snapshot["peers"]] == [node(us_a["ip"])], \
                        f"{case}: the named region's peers: {snapshot['peers']}"
                    seen[case] = failing[0]["error_kind"]
            finally:
                bed.emulator("DELETE", "/_emu/metadata-fault")
            return f"the auto source fails naming the fix, us-west-2 still answers; error kinds: {seen}"

        scenario("without its task metadata the auto source fails and names the fix; the named region answers",
                 metadata_failures_name_the_fix)

        def stopping_task_drains_until_stopped():
            victim, arn = eu_b["ip"], eu_b["arn"]
            others = [ip for ip in ips if ip != victim]
            watch = Watch(bed, eu_a["ip"], ["--from-metadata", "--ecs", "us-west-2/web/api"])
            try:
                wait_until(lambda: any(peer(s, node(victim)) for s in watch.snapshots()), 30,
                           f"the CLI's watch to list {node(victim)}")
                before = {ip: bed.status(ip)["poll"] for ip in others}
                peers_before = {ip: bed.status(ip)["peers"] for ip in others}
                bed.stop_task("eu-west-2", arn)
                task = bed.describe_task("eu-west-2", arn)
                assert task["desiredStatus"] == "STOPPED" and task["lastStatus"] in ("DEACTIVATING", "STOPPING"), \
                    f"the emulator did not hold the stopped task: {task['lastStatus']}/{task['desiredStatus']}"
                stop_seen = len(watch.snapshots())
                gaps = []

                def drained_for_three_polls():
                    for ip in others:
                        s = bed.status(ip)
                        if node(victim) not in s["nodes"]:
                            gaps.append((node(ip), s["poll"] - before[ip]))
                    draining = [peer(s, node(victim)) for s in watch.snapshots()[stop_seen:]]
                    reported = sum(1 for p in draining if p and p["draining"])
                    # Four polls after the stop: at least three began after it.
                    return all(bed.status(ip)["poll"] >= before[ip] + 4 for ip in others) and reported >= 3

                wait_until(drained_for_three_polls, 30, "four polls on every other node and three 'draining' reports")
                assert not gaps, f"the draining node was disconnected (node, polls after the stop): {gaps[:5]}"
                held = {node(ip): bed.status(ip)["poll"] - before[ip] for ip in others}
                counted = {node(ip): bed.status(ip)["peers"] for ip in others}
                assert counted == {node(ip): peers_before[ip] for ip in others}, \
                    f"the strategy's peer count changed while the task was draining: {counted} (before {peers_before})"
                task = bed.describe_task("eu-west-2", arn)
                assert task["lastStatus"] != "STOPPED", "the emulator stopped the task before the test advanced it"

                before = {ip: bed.status(ip)["poll"] for ip in others}
                bed.advance_tasks("eu-west-2", [arn], "STOPPED")
                last_seen = {ip: 0 for ip in others}  # polls after STOPPED during which it was still connected

                def polled_four_times():
                    for ip in others:
                        s = bed.status(ip)
                        if node(victim) in s["nodes"]:
                            last_seen[ip] = max(last_seen[ip], s["poll"] - before[ip])
                    return all(bed.status(ip)["poll"] >= before[ip] + 4 for ip in others)

                # Dropped within two polls, and not connected again in the two after.
                wait_until(polled_four_times, 30, "four polls on every other node after STOPPED")
                late = {node(ip): n for ip, n in last_seen.items() if n >= 2}
                assert not late, f"still connected two or more polls after STOPPED: {late}"
                # Its own node knows its task has left: it stays out instead of reconnecting.
                wait_until(lambda: bed.status(victim)["nodes"] == [], 10, f"{node(victim)} to drop its peers")
                wait_until(lambda: any(e["event"] == "removed" and e["peer"]["node"] == node(victim)
                                       for e in watch.events()), 10, "the CLI's watch to report the removal")
                events = [e["event"] for e in watch.events()
                          if e["event"] != "snapshot" and e.get("peer", {}).get("node") == node(victim)]
                assert events[-2:] == ["draining", "removed"], f"the CLI's events for {node(victim)}: {events}"
                wait_until(lambda: fully_meshed(bed, others), 15, "the other nodes to be meshed")
            finally:
                watch.stop()
                bed.kill_node(victim)  # also when it failed: the next scenario starts without it
            return (f"connected while STOPPING for {held} polls (reported draining by the CLI on each); "
                    f"once STOPPED, connected during at most {dict((node(i), n) for i, n in last_seen.items())} more polls")

        scenario("a STOPPING task drains (still connected) and is dropped once STOPPED", stopping_task_drains_until_stopped)

        def ecs_stop_sequence():
            # As ECS stops a task: StopTask (held STOPPING), SIGTERM to the container, the BEAM
            # exits, STOPPED after the stop timeout.
            t = bed.run_task("eu-west-2")
            leaving = t["ip"]
            bed.add_host("eu-west-2", leaving)
            bed.start_node(leaving, sources=AUTO_SOURCES["eu-west-2"], share_polling=False)
            others = [eu_a["ip"], us_a["ip"]]
            # Joined, not only connected: the new node dials the others, so it is in their
            # Node.list before their own polls list its task; a task a node's poll never saw
            # RUNNING is no peer of that node, so it is neither drained nor dropped there.
            wait_until(lambda: joined(bed, others + [leaving]), 60, f"{node(leaving)} to join, found by every poll")
            bed.stop_task("eu-west-2", t["arn"])
            bed.terminate_node(leaving)

            def attempts(ip):
                """Connects to the leaving node (made or failed), from the node's log since `mark`."""
                log = bed.log(ip)[mark[ip]:]
                return log.count(f'unable to connect to :"{node(leaving)}"') + log.count(f'connected to :"{node(leaving)}"')

            # Its BEAM has exited. Two polls for every other node to see the task draining (one
            # may have been in flight), then none of the next three may connect it anew: a
            # draining peer whose node has gone (it left the cluster itself) is not pulled back
            # in. Nobody crashes.
            start = {ip: bed.status(ip)["poll"] for ip in others}
            wait_until(lambda: all(bed.status(ip)["poll"] >= start[ip] + 2 for ip in others), 30, "two polls")
            mark = {ip: len(bed.log(ip)) for ip in others}
            before = {ip: bed.status(ip)["poll"] for ip in others}
            wait_until(lambda: all(bed.status(ip)["poll"] >= before[ip] + 3 for ip in others), 30, "three polls")
            assert bed.describe_task("eu-west-2", t["arn"])["lastStatus"] != "STOPPED"
            settled = {ip: attempts(ip) for ip in others}
            # Still every other node's (draining) peer: its task is STOPPING.
            kept = {node(ip): knows(bed, ip, [leaving]) for ip in others}
            assert all(kept.values()), f"{node(leaving)} was dropped while its task was STOPPING: {kept}"
            draining = {node(ip): bed.status(ip)["poll"] - before[ip] for ip in others}
            bed.advance_tasks("eu-west-2", [t["arn"]], "STOPPED")
            # The last poll each node had finished by then (a status written after the advance).
            stopped = {ip: bed.fresh_status(ip)["known_poll"] for ip in others}
            forgotten = {}  # ip -> polls after STOPPED until its poll no longer listed the node

            def forgotten_everywhere():
                for ip in others:
                    s = bed.status(ip)
                    if ip not in forgotten and node(leaving) not in s["known"]:
                        forgotten[ip] = s["known_poll"] - stopped[ip]
                return len(forgotten) == len(others)

            wait_until(forgotten_everywhere, 30, f"{node(leaving)} to be forgotten once STOPPED")
            # The poll in flight when STOPPED came, and the next one, which began after it.
            late = {node(ip): n for ip, n in forgotten.items() if n > 2}
            assert not late, f"still a peer more than two polls after STOPPED (polls): {late}"
            after = {ip: bed.status(ip)["poll"] for ip in others}
            wait_until(lambda: all(bed.status(ip)["poll"] >= after[ip] + 2 for ip in others), 30, "two more polls")
            known = {node(ip): bed.status(ip)["known"] for ip in others}
            back = {n: k for n, k in known.items() if node(leaving) in k}
            assert not back, f"{node(leaving)} listed again after it was forgotten: {back}"
            tried = {node(ip): attempts(ip) for ip in others if attempts(ip) > 0}
            assert not tried, f"connected {node(leaving)} again after it left: {tried}"
            for ip in others:
                s = bed.status(ip)
                assert s["strategy"] and s["restarts"] == 0, f"{node(ip)}: strategy crashed: {s}"
            assert fully_meshed(bed, others)
            return (f"not connected again while draining ({draining} polls) "
                    f"nor after STOPPED; forgotten within {dict((node(i), n) for i, n in forgotten.items())} "
                    f"polls of STOPPED; reconnects: {settled}")

        scenario("ECS's stop sequence (SIGTERM while STOPPING): not connected again while draining, forgotten once STOPPED",
                 ecs_stop_sequence)


def without_libcluster(scenario):
    with Bed(interval_ms=INTERVAL_MS) as bed:
        print(f"test bed {bed.prefix} (EcsPeers.Cluster, no libcluster): logs in {bed.work}", flush=True)
        bed.task_lifecycle(stop="hold")
        tasks = bed.seed({"eu-west-2": 2, "us-west-2": 1})
        live = {}
        # testbed.start_node passes its environment on: E2E_CLUSTER=child makes node.exs start
        # EcsPeers.Cluster instead of libcluster's Cluster.Supervisor.
        os.environ["E2E_CLUSTER"] = "child"
        try:
            for region, ts in tasks.items():
                for t in ts:
                    bed.add_host(region, t["ip"])
                    bed.start_node(t["ip"], share_polling=False)
                    live[t["ip"]] = (region, t["arn"])
        finally:
            os.environ.pop("E2E_CLUSTER", None)

        def child_meshes_and_leaves_cleanly():
            ips = list(live)
            wait_until(lambda: joined(bed, ips), 90, "every node to see every other and find it in its own poll")
            logs = "".join(bed.log(ip) for ip in ips)
            assert "[ecs_peers:ecs] connected to :" in logs, "no node logged `[ecs_peers:ecs] connected to`"
            assert "[libcluster:" not in logs, "a node logged through libcluster"
            victim = tasks["eu-west-2"][1]["ip"]
            region, arn = live.pop(victim)
            others = list(live)
            # A settled cluster: two more polls everywhere (OTP global syncs a new node in the
            # background; a stop within a second of the mesh forming races that sync).
            meshed_at = {ip: bed.status(ip)["poll"] for ip in ips}
            wait_until(lambda: all(bed.status(ip)["poll"] >= meshed_at[ip] + 2 for ip in ips), 30, "two polls")
            bed.stop_task(region, arn)
            bed.terminate_node(victim)
            bed.advance_tasks(region, [arn], "STOPPED")
            stopped = {ip: bed.status(ip)["poll"] for ip in others}
            wait_until(lambda: all(bed.status(ip)["peers"] == len(others) - 1 for ip in others), 30,
                       f"{node(victim)} to be dropped from every node's peers")
            polls = {node(ip): bed.status(ip)["poll"] - stopped[ip] for ip in others}
            assert fully_meshed(bed, others), "the other nodes are not meshed"
            for ip in others:
                s = bed.status(ip)
                assert s["strategy"] and s["restarts"] == 0, f"{node(ip)}: the child crashed: {s}"
            # The bar of the soak: no link between two nodes that both keep running is cut. A line
            # about the stopping node's own link is reported, not failed: that node is going.
            cuts = global_cuts(bed)
            healthy = [f"{ip}: {line}" for ip, line in cuts if not cuts_a_link_of((ip, line), victim)]
            assert not healthy, "OTP global cut links between running nodes:\n" + "\n".join(healthy)
            left = "left the cluster" in bed.log(victim) or "leaving the cluster" in bed.log(victim)
            assert left, f"{node(victim)} did not log leaving the cluster"
            return (f"meshed: {', '.join(node(i) for i in ips)}; dropped within {polls} polls of STOPPED; "
                    f"0 global cuts between running nodes, {len(cuts)} of the stopping node's own links")

        scenario("without libcluster (EcsPeers.Cluster): nodes mesh across both regions; a stopping task leaves with no "
                 "link cut by OTP global", child_meshes_and_leaves_cleanly)


if __name__ == "__main__":
    sys.exit(main())
