"""End-to-end: `ecs-peers doctor`, run from a host inside the test bed, diagnoses each broken case
built for real in network namespaces — and nothing on a healthy cluster.

Cases, one at a time, each restored before the next: a wrong cookie, a wrong basename, EPMD's port
dropped by a firewall, the distribution ports dropped, the peering route missing, the same IP in two
regions, AccessDenied on ecs:ListTasks, a region with no tasks. Each must produce exactly its own
diagnosis. Run as root after `mix test` has compiled elixir/_build/test.
Prints one line per case and `N passed, N failed`; exits non-zero when any failed.
With --show, also prints the doctor's text report for each case (pasted in docs/troubleshooting.md).
"""
import json
import os
import sys

from scenarios import Scenarios
from testbed import COOKIE, ENDPOINT, ROOT, Bed, require_root_and_netns, wait_until

BIN = os.path.join(ROOT, "target", "debug", "ecs-peers")
SHOW = "--show" in sys.argv
SOURCES = ["--ecs", "eu-west-2/web/api", "--ecs", "us-west-2/web/api"]


def doctor(bed, ns, extra=(), cookie=COOKIE, text=False):
    args = [BIN, "doctor", *SOURCES, *extra, "--basename", "app", "--endpoint-url", ENDPOINT,
            "--max-attempts", "1", "--check-timeout", "1s"]
    if not text:
        args.append("--json")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", RELEASE_COOKIE=cookie)
    r = bed.ns_exec(ns, *args, check=False, env=env)
    if text:
        return r.returncode, r.stdout
    assert r.returncode in (0, 5), f"doctor exited {r.returncode}: {r.stderr}"
    return r.returncode, json.loads(r.stdout)


def main():
    require_root_and_netns()
    scenario = Scenarios(trace_limit=2)
    with Bed(interval_ms=1000) as bed:
        print(f"test bed {bed.prefix}: logs in {bed.work}", flush=True)
        tasks = bed.seed({"eu-west-2": 2, "us-west-2": 2})
        ips = {}
        for region, ts in tasks.items():
            for t in ts:
                bed.add_host(region, t["ip"])
                bed.start_node(t["ip"])
                ips.setdefault(region, []).append(t["ip"])
        doc = bed.add_doctor_host()
        wait_until(lambda: all((bed.status(ip) or {}).get("poll", 0) > 0 for r in ips.values() for ip in r), 60,
                   "every node to run")
        eu5, us5 = ips["eu-west-2"][1], ips["us-west-2"][1]

        def case(name, expected, setup=lambda: None, restore=lambda: None, extra=()):
            def diagnose():
                try:
                    setup()
                    code, report = doctor(bed, doc, extra)
                    got = [(d["code"], d["subject"]) for d in report["diagnoses"]]
                    if SHOW:
                        print(f"\n$ ecs-peers doctor {' '.join(SOURCES + list(extra))} --basename app --cookie …")
                        print(doctor(bed, doc, extra, text=True)[1])
                    assert got == expected, f"expected {expected}, got {got}: {json.dumps(report['diagnoses'], indent=1)}"
                    assert code == (5 if expected else 0), f"exit status {code}"
                    return report
                finally:
                    restore()

            return scenario(name, diagnose, describe=lambda r: str([d["code"] for d in r["diagnoses"]] or "no problems"))

        def restart(ip, **kw):
            bed.kill_node(ip)
            bed.start_node(ip, **kw)
            wait_until(lambda: (bed.status(ip) or {}).get("poll", 0) > 0, 60, f"{ip} to run again")

        report = case("a healthy cluster has no diagnosis", [])
        if report:
            assert all(p["registered"] and p["handshake"]["result"] == "ok" for p in report["peers"]), report["peers"]

        case("a wrong cookie", [("cookie_mismatch", f"app@{eu5} (eu-west-2)")],
             setup=lambda: restart(eu5, cookie="not-the-cookie"), restore=lambda: restart(eu5))
        case("a wrong basename", [("name_mismatch", f"app@{us5} (us-west-2)")],
             setup=lambda: restart(us5, basename="web"), restore=lambda: restart(us5))

        def fw(ip, action, ports):
            bed.ns_exec(bed.hosts[ip]["ns"], "iptables", action, "INPUT", "-p", "tcp", "--dport", ports, "-j", "DROP")

        case("EPMD's port dropped by a firewall", [("epmd_blocked", f"app@{eu5} (eu-west-2)")],
             setup=lambda: fw(eu5, "-A", "4369"), restore=lambda: fw(eu5, "-D", "4369"))
        case("the distribution ports dropped", [("dist_port_blocked", f"app@{eu5} (eu-west-2)")],
             setup=lambda: fw(eu5, "-A", "9100:9110"), restore=lambda: fw(eu5, "-D", "9100:9110"))
        case("the peering route missing", [("region_unreachable", "us-west-2")],
             setup=lambda: bed.ns_exec(doc, "ip", "route", "del", "10.202.0.0/24"),
             restore=lambda: bed.ns_exec(doc, "ip", "route", "add", "10.202.0.0/24", "via", "10.201.0.1"))

        eu4 = ips["eu-west-2"][0]
        bed.world("seed", {"cloudmap": [{"region": "ap-southeast-2", "namespace": "internal", "service": "api",
                                         "instances": [{"id": "x", "ipv4": eu4}]}]})
        case("the same IP in two regions", [("overlapping_cidrs", eu4)],
             extra=["--cloudmap", "ap-southeast-2/internal/api"])

        deny = {"operation": "ListTasks", "region": "us-west-2", "count": 1000, "status": 400,
                "code": "AccessDeniedException",
                "message": "User: arn:aws:sts::123456789012:assumed-role/app/t is not authorized to perform: ecs:ListTasks"}
        case("AccessDenied on ecs:ListTasks", [("access_denied", "ecs:us-west-2/web/api")],
             setup=lambda: bed.faults("POST", deny),
             restore=lambda: bed.faults("DELETE"))

        bed.world("seed", {"ecs": [{"region": "ap-northeast-1", "cluster": "empty", "subnet": "10.203.0.0/24", "tasks": []}]})
        case("a region with no tasks", [("region_without_peers", "ap-northeast-1")],
             extra=["--ecs", "ap-northeast-1/empty"])

        case("healthy again after every repair", [])

    return scenario.summary()


if __name__ == "__main__":
    sys.exit(main())
