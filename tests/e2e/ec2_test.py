"""End-to-end: ECS on EC2 (bridge and host network modes) and Fargate, over the EPMD-less
distribution bridge (EcsPeers.Epmd): real BEAM nodes started with `-start_epmd false
-epmd_module Elixir.EcsPeers.Epmd`, each listening on the one port ECS_PEERS_DIST_PORT (4370),
clustered by EcsPeers.Strategy against the project's AWS emulator. The bed is testbed.Ec2Bed.

Two beds, one after the other:

Fargate (awsvpc): three tasks in two regions, each a namespace with its own IP that accepts new
connections on TCP 4370 only (iptables INPUT: the one security-group rule). It proves:
  1. the nodes mesh across both regions through that one port, with no EPMD anywhere: no epmd
     process in any namespace of the bed, and nothing but 4370 listening in a task namespace.

EC2: an "EC2 instance" (namespace) in each region running two bridge-mode containers (namespaces
behind the instance's docker0, reached through DNAT from the dynamic host port the emulator
assigned to container port 4370, as Docker's bridge driver does), plus a host-mode instance in
eu-west-2; one BEAM per task, named `app-<task id>@<instance ip>`, with no node_basename
configured (the basename comes from the node's own name). It proves:
  2. all five nodes mesh: each one is dialled at its instance's address and mapped host port,
     which only the core's bridge/host-mode peers (address + port) handed to EcsPeers.Epmd give;
     no epmd runs anywhere;
  3. a task stopped in the emulator is dropped by every other node (and, having left, drops
     them);
  4. a task started on an instance that already runs one joins everyone;
  5. `ecs-peers list`, run in a namespace of the bed, shows every task at its instance address and
     mapped host port (host mode: the container port);
  6. `ecs-peers doctor`, run there too, finds no problem on the healthy bed, and names a
     bridge-mode task whose container has no binding for the distribution port.

Run as root, after `mix test` has compiled elixir/_build/test: python3 tests/e2e/ec2_test.py
Prints one line per scenario (with its time) and `N passed, N failed`; exits non-zero on failure.
"""
import json
import os
import subprocess
import sys

from scenarios import Scenarios
from testbed import COOKIE, DIST_PORT, ENDPOINT, ROOT, Ec2Bed, require_root_and_netns, task_id, wait_until

INTERVAL_MS = 1000
MESH_TIMEOUT = 60  # BEAM start-up on 2 shared cores dominates: several nodes boot at once
BIN = os.path.join(ROOT, "target", "debug", "ecs-peers")
CLI_ENV = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_EC2_METADATA_DISABLED="true")
SOURCES = ["--ecs", "eu-west-2/web/api", "--ecs", "us-west-2/web/api"]


def main():
    require_root_and_netns()
    scenario = Scenarios()
    fargate(scenario)
    ec2(scenario)
    return scenario.summary()


def run_doctor(ns, *flags):
    """`ecs-peers doctor --json` inside namespace `ns`, with the cookie (a real handshake)."""
    return subprocess.run(["ip", "netns", "exec", ns, BIN, "doctor", "--json", "--endpoint-url", ENDPOINT,
                           "--basename", "app", "--timeout", "3s", "--max-attempts", "1", "--cookie", COOKIE,
                           *flags, *SOURCES], capture_output=True, text=True, env=CLI_ENV, timeout=60)


def assert_healthy(r):
    assert r.returncode == 0, f"doctor exit {r.returncode} on the healthy bed:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}"
    report = json.loads(r.stdout)
    assert report["diagnoses"] == [], report["diagnoses"]
    # Not vacuous: every peer's distribution port was reached and a handshake made with the cookie.
    for p in report["peers"]:
        assert (p.get("dist") or {}).get("result") == "open", f"{p['node']}: distribution port {p.get('dist')}"
        assert (p.get("handshake") or {}).get("result") == "ok", f"{p['node']}: handshake {p.get('handshake')}"
    return report


def no_epmd_anywhere(bed):
    found = {ns: comms for ns, comms in bed.processes().items() if "epmd" in comms}
    assert not found, f"an epmd runs in {found}"


def meshed(bed, keys):
    """Every BEAM is connected to every other and has found every other in its own poll (a new
    node dials the others, so it is in their Node.list before their polls list its task)."""
    names = {k: bed.beams[k]["name"] for k in keys}
    others = {k: [n for o, n in names.items() if o != k] for k in keys}
    return all(bed.beam_sees(k, others[k]) and bed.beam_knows(k, others[k]) for k in keys)


def explain(bed, keys):
    return "; ".join(f"{bed.beams[k]['name']} sees {(bed.beam_status(k) or {}).get('nodes')}, "
                     f"its poll found {(bed.beam_status(k) or {}).get('known')}" for k in keys)


def wait_meshed(bed, keys, what):
    try:
        wait_until(lambda: meshed(bed, keys), MESH_TIMEOUT, what)
    except AssertionError as e:
        tails = "\n".join(f"--- {bed.beams[k]['name']}:\n{bed.beam_log(k)[-1500:]}" for k in keys)
        raise AssertionError(f"{e}: {explain(bed, keys)}\n{tails}") from None


def fargate(scenario):
    with Ec2Bed(interval_ms=INTERVAL_MS) as bed:
        print(f"Fargate bed {bed.prefix}: logs in {bed.work}", flush=True)
        tasks = bed.seed({"eu-west-2": 2, "us-west-2": 1})
        keys = []
        for region, ts in tasks.items():
            for t in ts:
                ns = bed.add_host(region, t["ip"])
                bed.only_port_open(ns)
                key = task_id(t["arn"])
                bed.start_epmdless_node(key, ns, f"app@{t['ip']}", metadata_uri=t["metadata_uri"])
                keys.append(key)

        def one_port_no_epmd():
            wait_meshed(bed, keys, "the Fargate nodes to mesh through port 4370 only")
            no_epmd_anywhere(bed)
            for k in keys:
                ports = bed.listening(bed.beams[k]["ns"])
                assert ports == {DIST_PORT}, f"{bed.beams[k]['name']} listens on {sorted(ports)}, expected only {DIST_PORT}"
            return f"{len(keys)} nodes, only TCP {DIST_PORT} open and listening, no epmd"

        scenario("Fargate: the nodes mesh across regions on one port, with no EPMD", one_port_no_epmd)

        def doctor_one_port():
            report = assert_healthy(run_doctor(bed.add_doctor_host(), "--no-epmd"))
            return f"{len(report.get('peers', []))} peers checked on TCP {DIST_PORT} only"

        scenario("Fargate: ecs-peers doctor --no-epmd passes through the one open port", doctor_one_port)


def ec2(scenario):
    with Ec2Bed(interval_ms=INTERVAL_MS) as bed:
        print(f"EC2 bed {bed.prefix}: logs in {bed.work}", flush=True)
        eu_ip, host_ip, us_ip = "10.201.0.10", "10.201.0.11", "10.202.0.10"
        eu_ci, host_ci = bed.register_instances("eu-west-2", "web", [eu_ip, host_ip])
        (us_ci,) = bed.register_instances("us-west-2", "web", [us_ip])
        for region, ip in (("eu-west-2", eu_ip), ("us-west-2", us_ip)):
            bed.add_instance(region, ip)
        bed.add_instance("eu-west-2", host_ip)
        live = {}  # key -> (region, arn)
        dialled = {}  # node name -> (instance ip, the port its distribution is reached at)

        def start_bridge_task(region, ci, instance_ip):
            t = bed.start_ec2_task(region, ci["container_instance"], "br", "bridge", [{"containerPort": DIST_PORT}])
            assert t["ip"] == instance_ip, f"the emulator placed the task at {t['ip']}, not {instance_ip}"
            ports = {b["hostPort"]: b["containerPort"] for b in t["bindings"]}
            assert list(ports.values()) == [DIST_PORT] and DIST_PORT not in ports, \
                f"expected one dynamic host port for {DIST_PORT}, got bindings {t['bindings']}"
            ns, _addr = bed.add_container(instance_ip, ports)
            key = task_id(t["arn"])
            bed.start_epmdless_node(key, ns, f"app-{key}@{instance_ip}", metadata_uri=t["metadata_uri"])
            live[key] = (region, t["arn"])
            dialled[bed.beams[key]["name"]] = (instance_ip, next(iter(ports)))
            return key

        for region, ci, ip in (("eu-west-2", eu_ci, eu_ip), ("us-west-2", us_ci, us_ip)):
            for _ in range(2):
                start_bridge_task(region, ci, ip)
        h = bed.start_ec2_task("eu-west-2", host_ci["container_instance"], "hm", "host", [{"containerPort": DIST_PORT}])
        assert h["bindings"] == [{"containerPort": DIST_PORT, "hostPort": DIST_PORT}], h["bindings"]
        hkey = task_id(h["arn"])
        bed.start_epmdless_node(hkey, bed.instances[host_ip]["ns"], f"app-{hkey}@{host_ip}",
                                metadata_uri=h["metadata_uri"])
        live[hkey] = ("eu-west-2", h["arn"])
        dialled[bed.beams[hkey]["name"]] = (host_ip, DIST_PORT)

        def mesh():
            wait_meshed(bed, list(live), "the bridge- and host-mode nodes to mesh")
            no_epmd_anywhere(bed)
            return f"{len(live)} nodes on 3 instances in 2 regions, no epmd"

        scenario("EC2: bridge- and host-mode tasks on three instances in two regions mesh", mesh)

        def stopped_task_dropped():
            key = next(k for k in live if k != hkey and bed.beams[k]["name"].endswith("@" + eu_ip))
            region, arn = live.pop(key)
            gone = bed.beams[key]["name"]
            bed.stop_task(region, arn)
            wait_until(lambda: all(gone not in (bed.beam_status(k) or {}).get("nodes", [gone]) for k in live),
                       15, f"every other node to drop {gone}")
            wait_until(lambda: bed.beam_sees(key, []), 15, f"{gone}, having left, to drop everyone")
            bed.beams[key]["proc"].terminate()
            wait_meshed(bed, list(live), "the others to stay meshed")
            return f"{gone} dropped by {len(live)} nodes"

        scenario("EC2: a stopped task is dropped everywhere", stopped_task_dropped)

        def joins():
            before = bed.instances[eu_ip]["containers"]
            key = start_bridge_task("eu-west-2", eu_ci, eu_ip)
            wait_meshed(bed, list(live), f"{bed.beams[key]['name']} to join")
            return f"{bed.beams[key]['name']} joined on {eu_ip} (container {before + 1} there)"

        scenario("EC2: a task started on an instance that already runs one joins", joins)

        doctor(scenario, bed, live, dialled)


def doctor(scenario, bed, live, dialled):
    ns = bed.add_doctor_host()

    def listed():
        r = subprocess.run(["ip", "netns", "exec", ns, BIN, "list", "--json", "--endpoint-url", ENDPOINT,
                            "--basename", "app", "--max-attempts", "1", *SOURCES],
                           capture_output=True, text=True, env=CLI_ENV, timeout=60)
        assert r.returncode == 0, f"list exit {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        got = {p["node"]: (p["ip"], p.get("port")) for p in json.loads(r.stdout)["peers"]}
        want = {bed.beams[k]["name"]: dialled[bed.beams[k]["name"]] for k in live}
        assert got == want, f"ecs-peers list shows {got}, expected {want}"
        return f"{len(got)} tasks at instance address and mapped port"

    scenario("EC2: ecs-peers list shows every task at its instance address and mapped port", listed)

    def healthy():
        report = assert_healthy(run_doctor(ns))
        return f"{len(report.get('peers', []))} peers checked, no problem"

    scenario("EC2: ecs-peers doctor passes on the healthy bed", healthy)

    def missing_binding():
        ci = bed.register_instances("eu-west-2", "web", ["10.201.0.12"])[0]
        t = bed.start_ec2_task("eu-west-2", ci["container_instance"], "br", "bridge", [{"containerPort": 8080}])
        r = run_doctor(ns)
        assert r.returncode == 5, f"doctor exit {r.returncode}, expected 5 (problems found):\n{r.stdout[-3000:]}"
        tid = task_id(t["arn"])
        diagnoses = json.loads(r.stdout)["diagnoses"]
        named = [d for d in diagnoses if tid in json.dumps(d) and str(DIST_PORT) in json.dumps(d)]
        assert named, f"no diagnosis names task {tid} and port {DIST_PORT}: {json.dumps(diagnoses, indent=1)[-3000:]}"
        others = [d for d in diagnoses if d not in named]
        assert not others, f"diagnoses besides the missing binding: {json.dumps(others, indent=1)[-3000:]}"
        return f"[{named[0]['code']}] {named[0]['problem'][:100]}"

    scenario("EC2: ecs-peers doctor names a bridge-mode task with no binding for the distribution port",
             missing_binding)


if __name__ == "__main__":
    sys.exit(main())
