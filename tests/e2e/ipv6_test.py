"""End-to-end, IPv6-only: real BEAM nodes in IPv6-only network namespaces (no IPv4 address at all)
cluster through EcsPeers.Strategy over `-proto_dist inet6_tcp`, configured zero-config (`cluster:
:auto` from each task's metadata endpoint, reached over IPv6) plus the other region; then
`ecs-peers doctor`, from an IPv6-only host, checks every one of them.

Node names hold the address as Erlang accepts it and as ecs-peers renders it: `app@fdec:5ee5:201::4`
(no brackets: a node started as `app@[fdec:…]` is a different name, which nobody reaches), in the
compressed form (RFC 5952) that the emulator, AWS and Rust all print.

Run as root after `mix test` has compiled elixir/_build/test and `cargo build` the CLI. Prints one
line per check and `N passed, N failed`; exits non-zero when any failed.
"""
import json
import os
import sys

from scenarios import Scenarios
from testbed import COOKIE, ENDPOINT6, ROOT, Bed, fully_meshed, node, require_root_and_netns, wait_until

BIN = os.path.join(ROOT, "target", "debug", "ecs-peers")
REGIONS = {"eu-west-2": 3, "us-west-2": 2}


def sources_for(region):
    """Zero-config: this task's own cluster and region from its metadata, plus the other region."""
    other = next(r for r in REGIONS if r != region)
    return f'[[type: :ecs, cluster: :auto], [type: :ecs, region: "{other}", cluster: "web", service: "api"]]'


def main():
    require_root_and_netns()
    check = Scenarios()

    with Bed(interval_ms=500, ipv6=True) as bed:
        print(f"test bed {bed.prefix} (IPv6-only): logs in {bed.work}", flush=True)
        tasks = bed.seed6(REGIONS)
        ips = []
        for region, ts in tasks.items():
            for t in ts:
                bed.add_host6(region, t["ipv6"])
                bed.start_node(t["ipv6"], sources=sources_for(region), endpoint=ENDPOINT6, proto_dist="inet6_tcp")
                ips.append(t["ipv6"])

        def own_source_resolved(ip):
            # Zero-config: the auto source is this task's own, resolved to its real region (its
            # id and its region; the region used to stay "auto"). Read from the strategy's poll
            # telemetry, which may land just after the connections of the same poll.
            region = bed.hosts[ip]["region"]
            s = bed.status(ip) or {}
            own = [x for x in s.get("sources", []) if x["id"] == f"ecs:{region}/web/family:api"]
            return bool(own) and own[0]["ok"] and own[0]["region"] == region

        def meshed():
            try:
                wait_until(lambda: fully_meshed(bed, ips) and all(own_source_resolved(ip) for ip in ips), 120,
                           f"the {len(ips)} IPv6 nodes to be fully meshed, each with its own source resolved")
            except AssertionError:
                for ip in ips:
                    print(f"--- {ip}: {json.dumps(bed.status(ip))}\n{bed.log(ip)[-1500:]}", flush=True)
                raise
            for ip in ips:
                s = bed.status(ip)
                assert s["node"] == node(ip), s
                assert s["restarts"] == 0, s

        check(f"{len(ips)} IPv6-only nodes in two regions cluster zero-config over inet6_tcp", meshed)

        def doctor():
            ns = bed.add_host6("eu-west-2", "fdec:5ee5:201::fa")
            env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", RELEASE_COOKIE=COOKIE)
            r = bed.ns_exec(ns, BIN, "doctor", "--ecs", "eu-west-2/web/api", "--ecs", "us-west-2/web/api",
                            "--basename", "app", "--endpoint-url", ENDPOINT6, "--max-attempts", "1",
                            "--check-timeout", "2s", "--json", check=False, env=env)
            assert r.returncode == 0, f"doctor exited {r.returncode}: {r.stdout[-3000:]} {r.stderr[-2000:]}"
            report = json.loads(r.stdout)
            assert report["diagnoses"] == [], report["diagnoses"]
            peers = report["peers"]
            assert sorted(p["node"] for p in peers) == sorted(node(ip) for ip in ips), peers
            assert all(p["registered"] and p["handshake"]["result"] == "ok" for p in peers), peers

        check("ecs-peers doctor from an IPv6-only host: every IPv6 peer registered and its handshake ok", doctor)

    sys.exit(check.summary())


if __name__ == "__main__":
    main()
