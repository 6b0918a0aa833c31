"""The README's demo: two "regions" of ECS tasks as network namespaces, three BEAM nodes clustering
through EcsPeers.Strategy, a task stopped (as ECS stops one: draining, SIGTERM to its BEAM, then
STOPPED) and a task started, then everything torn down. It ends with the lines in which OTP's
global cut a link (prevent_overlapping_partitions), from every node's log: there should be none
between running nodes. One with the stopped task's node can appear (global on another node
cutting its link to the node that is leaving: harmless, see docs/troubleshooting.md, "Leaving without cuts").
Run as root via scripts/demo."""
import os
import sys
import time

from testbed import ENDPOINT, ROOT, Bed, cuts_a_link_of, global_cuts, require_root_and_netns, wait_until

BIN = os.path.join(ROOT, "target", "debug", "ecs-peers")


def say(msg):
    print(f"\n--- {msg}", flush=True)


def show_cluster(bed, ips):
    for ip in ips:
        s = bed.status(ip) or {"nodes": []}
        print(f"  app@{ip:<12} ({bed.hosts[ip]['region']}) sees: {', '.join(s['nodes']) or '(nobody)'}", flush=True)


def cli_list(bed):
    r = bed.ns_exec(bed.router, BIN, "list", "--ecs", "eu-west-2/web/api", "--ecs", "us-west-2/web/api",
                    "--basename", "app", "--endpoint-url", ENDPOINT, "--max-attempts", "1", check=False,
                    env=dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test"))
    print("\n".join("  " + line for line in r.stdout.rstrip().splitlines()), flush=True)


def meshed(bed, ips):
    return all(set((bed.status(ip) or {"nodes": []})["nodes"]) == {f"app@{o}" for o in ips if o != ip} for ip in ips)


def main():
    require_root_and_netns()
    with Bed(interval_ms=2000) as bed:
        say(f"two VPCs (eu-west-2 10.201.0.0/24, us-west-2 10.202.0.0/24) peered through namespace {bed.router}; "
            "AWS emulator on 10.200.0.1:5000")
        # Stopped tasks go through ECS's stop sequence (DEACTIVATING until the test says STOPPED).
        bed.task_lifecycle(stop="hold")
        tasks = bed.seed({"eu-west-2": 2, "us-west-2": 1})
        ips = []
        for region, ts in tasks.items():
            for t in ts:
                bed.add_host(region, t["ip"])
                ips.append(t["ip"])
        say("ECS reports these tasks (ecs-peers list, run inside the test bed):")
        cli_list(bed)

        say("starting three BEAM nodes, one per task, each with EcsPeers.Strategy (polling every 2 s)")
        started = time.monotonic()
        for ip in ips:
            bed.start_node(ip)
        wait_until(lambda: meshed(bed, ips), 90, "the cluster to form")
        print(f"  cluster formed in {time.monotonic() - started:.1f} s:", flush=True)
        show_cluster(bed, ips)

        victim = tasks["eu-west-2"][1]
        say(f"stopping task {victim['arn'].rsplit('/', 1)[-1]} (app@{victim['ip']}) in eu-west-2 as ECS does: "
            "StopTask (the task drains), SIGTERM to its BEAM, then STOPPED")
        bed.stop_task("eu-west-2", victim["arn"])
        print(f"  ECS reports it {bed.describe_task('eu-west-2', victim['arn'])['lastStatus']}; SIGTERM to app@{victim['ip']}",
              flush=True)
        bed.terminate_node(victim["ip"])
        rest = [ip for ip in ips if ip != victim["ip"]]
        bed.advance_tasks("eu-west-2", [victim["arn"]], "STOPPED")
        print(f"  its BEAM has exited; ECS reports it {bed.describe_task('eu-west-2', victim['arn'])['lastStatus']}", flush=True)
        wait_until(lambda: all((bed.status(ip) or {}).get("peers") == len(rest) - 1 for ip in rest)
                   and meshed(bed, rest), 30, "the stopped task to be dropped and the rest meshed")
        show_cluster(bed, rest)

        new = bed.run_task("us-west-2")
        say(f"starting a new task in us-west-2 (app@{new['ip']})")
        bed.add_host("us-west-2", new["ip"])
        bed.start_node(new["ip"])
        rest.append(new["ip"])
        wait_until(lambda: meshed(bed, rest), 90, "the new node to join")
        show_cluster(bed, rest)

        # The node that joined last dialled the others, so its log shows libcluster connecting it
        # (a node that was dialled by the others logs nothing: it had nobody left to connect).
        say(f"the log of app@{new['ip']}, the node that joined last:")
        for line in bed.log(new["ip"]).splitlines():
            if "[libcluster:" in line or "'global'" in line:
                print("  " + line, flush=True)
        cuts = global_cuts(bed)
        leaving = [c for c in cuts if cuts_a_link_of(c, victim["ip"])]
        say(f"links cut by OTP global (prevent_overlapping_partitions), in every node's log: "
            f"{len(cuts) - len(leaving)} between running nodes, {len(leaving)} with the stopped task's node")
        for ip, line in cuts:
            print(f"  {ip}: {line}", flush=True)
        say("tearing the test bed down")
    print("demo done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
