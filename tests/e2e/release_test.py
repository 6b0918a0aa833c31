"""End-to-end: a real `mix release` booted in ECS task namespaces, named by the release recipe
(examples/rel/env.sh.eex → `bin/<release> eval 'EcsPeers.Release.env()'` → the core's rule).

A fresh application with ecs_peers as a path dependency (offline: the libcluster contract double
and the cargo-built NIF, as elixir/test/ecs_peers/fresh_app_test.exs builds one) is released with
the recipe's files: `relapp` with rel/env.sh.eex (awsvpc: EPMD, the default), `relapp_bridge` with
env.sh.eex and the EPMD-less vm.args.eex and remote.vm.args.eex (ECS on EC2, bridge or host). Each
is booted (`bin/<release> start`) in one network namespace per task shape, with the emulator's task metadata endpoint as ECS_CONTAINER_METADATA_URI_V4 and the
emulator as AWS_ENDPOINT_URL. For each shape it proves:
  - the node's name, asked through `bin/<release> rpc` (which runs env.sh too, so the console
    computes the same name and reaches the node), equals the core's answer for the same task:
    the name `ecs-peers list` gives the task with that ARN;
and it reports what the boot step costs (`bin/<release> eval 'EcsPeers.Release.env()'`, timed).
With TLS distribution (ECS_PEERS_TLS_CA set, docs/tls.md) the awsvpc IPv4 release boots over
`-proto_dist ecs_peers_tls` from the same env.sh, and both `rpc` and `remote` (typed into on a
terminal) reach it, each with a certificate the core issues from a CA the test stores in the
emulator's Secrets Manager (made per run; no key material committed).
Shapes: awsvpc IPv4, awsvpc dual-stack (IPv4 wins, as for peers), awsvpc IPv6-only (the shell
recipe failed there: it read only IPv4Addresses); ECS on EC2 in bridge mode (the instance's
address and <basename>-<task id>).

Run as root after scripts/test has built the NIF (elixir/priv/native) and the CLI
(target/debug/ecs-peers): python3 tests/e2e/release_test.py
Prints one line per shape and `N passed, N failed`; exits non-zero when any failed.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from scenarios import Scenarios
from testbed import (COOKIE, ENDPOINT, ENDPOINT6, ROOT, VPCS, VPCS6, Bed, Ec2Bed, require_root_and_netns,
                     wait_until)

APP, APP_BRIDGE = "relapp", "relapp_bridge"
BIN = os.path.join(ROOT, "target", "debug", "ecs-peers")
NIF = os.path.join(ROOT, "elixir", "priv", "native", "libecs_peers_nif.so")
BOOT_TIMEOUT = 60  # a release's first boot on 2 shared cores, and each rpc boots a VM too

MIX_EXS = """\
defmodule Relapp.MixProject do
  use Mix.Project

  def project do
    [
      app: :relapp,
      version: "0.1.0",
      elixir: "~> 1.14",
      deps: [{:ecs_peers, path: %r}],
      releases: [relapp: [], relapp_bridge: [rel_templates_path: "rel_bridge"]]
    ]
  end

  def application, do: [extra_applications: [:logger]]
end
"""

def build_releases():
    """Both releases, built once: ({name: its root}, the seconds the builds took)."""
    t0 = time.monotonic()
    if not os.path.exists(NIF):
        raise SystemExit(f"{NIF} is missing: build the NIF first (scripts/lib.sh build_nif debug)")
    work = tempfile.mkdtemp(prefix="ecs-peers-release-")
    with open(os.path.join(work, "mix.exs"), "w") as f:
        f.write(MIX_EXS.replace("%r", json.dumps(os.path.join(ROOT, "elixir"))))
    for rel, names in (("rel", ["env.sh.eex"]), ("rel_bridge", ["env.sh.eex", "vm.args.eex", "remote.vm.args.eex"])):
        os.makedirs(os.path.join(work, rel))
        for name in names:
            shutil.copy(os.path.join(ROOT, "examples", "rel", name), os.path.join(work, rel, name))
    env = dict(os.environ, MIX_ENV="prod", ECS_PEERS_OFFLINE="1", HEX_OFFLINE="1",
               MIX_HOME=os.environ.get("MIX_HOME", os.path.join(ROOT, ".mix")))
    for var in ("MIX_EXS", "MIX_BUILD_PATH", "MIX_DEPS_PATH", "ECS_PEERS_NIF_PATH"):
        env.pop(var, None)
    for name in (APP, APP_BRIDGE):
        r = subprocess.run(["mix", "release", name, "--overwrite"], cwd=work, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"mix release {name} failed in {work}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    roots = {name: os.path.join(work, "_build", "prod", "rel", name) for name in (APP, APP_BRIDGE)}
    return work, roots, time.monotonic() - t0


class Release:
    """The release booted in one namespace: its environment, its process, its commands."""

    def __init__(self, bed, root, ns, metadata_uri, endpoint, key, extra_env=None):
        self.bed, self.root, self.ns = bed, root, ns
        self.name = os.path.basename(root)
        self.log = os.path.join(bed.work, f"release-{key}.log")
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                        AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL=endpoint,
                        ECS_CONTAINER_METADATA_URI_V4=metadata_uri, RELEASE_COOKIE=COOKIE, HOME=bed.work,
                        RELEASE_TMP=os.path.join(bed.work, f"tmp-{key}"), **(extra_env or {}))
        for var in ("RELEASE_NODE", "RELEASE_DISTRIBUTION", "ECS_PEERS_NODE_BASENAME", "ERL_AFLAGS",
                    "ECS_PEERS_STATIC_PEERS", "AWS_REGION", "AWS_DEFAULT_REGION"):
            self.env.pop(var, None)
        self.proc = None

    def command(self, *args, check=False):
        return self.bed.ns_exec(self.ns, os.path.join(self.root, "bin", self.name), *args, env=self.env, check=check)

    def start(self):
        # Killed with its namespace at the bed's teardown, if the test does not stop it first.
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, os.path.join(self.root, "bin", self.name),
                                      "start"], env=self.env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def node(self):
        """The running node's name, as `bin/<release> rpc` reaches it; None while it is not up."""
        if self.proc.poll() is not None:
            raise AssertionError(f"bin/{self.name} start exited {self.proc.returncode}: {self.output()[-2000:]}")
        r = self.command("rpc", "IO.puts(node())")
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None

    def boot_seconds(self):
        """One run of the boot step alone, timed: what each release command pays."""
        t0 = time.monotonic()
        r = self.command("eval", "EcsPeers.Release.env()")
        assert r.returncode == 0, f"the boot step failed: {r.stdout} {r.stderr}"
        return time.monotonic() - t0

    def output(self):
        with open(self.log) as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.command("stop")
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def remote_says(release, ns, prompt_node, line, expected, timeout=BOOT_TIMEOUT):
    """Types `line` into `bin/<release> remote` on a terminal (util-linux `script`: iex reads no
    pipe) and keeps it open until `expected` is printed; returns the output."""
    cmd = f"{os.path.join(release.root, 'bin', release.name)} remote"
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "script", "-qfec", cmd, "/dev/null"],
                            env=release.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = []
    # Character by character: the prompt ends no line.
    reader = threading.Thread(target=lambda: out.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True)
    reader.start()
    def printed(text):
        return lambda: text in "".join(out) or proc.poll() is not None

    try:
        try:
            # The prompt names the node the console is attached to; typed earlier, a line is lost.
            wait_until(printed(f"iex({prompt_node})"), timeout, f"bin/{release.name} remote's prompt", step=0.2)
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            wait_until(printed(expected), timeout, f"bin/{release.name} remote to print {expected!r}", step=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}; it printed: {''.join(out)[-2000:]!r}") from None
    finally:
        proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
    return "".join(out)


def core_name(bed, region, arn, basename, endpoint=ENDPOINT):
    """The core's answer: the node name `ecs-peers list` gives the task `arn` (run in the router
    namespace, where the emulator answers), with the release's basename."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_EC2_METADATA_DISABLED="true")
    for var in ("RELEASE_NODE", "ECS_PEERS_DIST_PORT"):
        env.pop(var, None)
    r = bed.ns_exec(bed.router, BIN, "list", "--json", "--ecs", f"{region}/web", "--basename", basename,
                    "--endpoint-url", endpoint, "--max-attempts", "1", env=env, check=False)
    assert r.returncode == 0, f"ecs-peers list exited {r.returncode}: {r.stderr[-2000:]}"
    names = [p["node"] for p in json.loads(r.stdout)["peers"] if p.get("task_arn") == arn]
    assert len(names) == 1, f"ecs-peers list names the task {arn} {len(names)} times: {r.stdout[-2000:]}"
    return names[0]


def boots_named_as_its_peers_name_it(release, expected):
    release.start()
    try:
        got = wait_until(release.node, BOOT_TIMEOUT, f"bin/{release.name} rpc to reach the node (log: {release.log})", step=0.5)
        assert got == expected, f"the release named itself {got}, its peers name it {expected}"
        return f"{got}; boot step {release.boot_seconds():.2f}s"
    finally:
        release.stop()


def awsvpc(scenario, roots):
    root = roots[APP]

    with Bed(interval_ms=1000, ipv6=True) as bed:
        print(f"test bed {bed.prefix} (awsvpc): logs in {bed.work}", flush=True)
        region = "eu-west-2"
        net = VPCS[region][1]

        def v4(dual):
            spec = {"region": region, "cluster": "web", "subnet": f"{net}.0/24", "family": "api", "count": 1,
                    "group": "service:api"}
            if dual:
                spec["subnet_ipv6"] = f"{VPCS6[region]}::/64"
            [t] = bed.world("run", spec)
            assert t["ip"] and (t["ipv6"] if dual else not t["ipv6"]), t
            ns = bed.add_host(region, t["ip"])
            release = Release(bed, root, ns, t["metadata_uri"], ENDPOINT, t["ip"])
            return boots_named_as_its_peers_name_it(release, core_name(bed, region, t["arn"], APP))

        def v6_only():
            [t] = bed.seed6({region: 1})[region]
            ns = bed.add_host6(region, t["ipv6"])
            release = Release(bed, root, ns, bed.metadata[t["ipv6"]], ENDPOINT6, t["ipv6"])
            return boots_named_as_its_peers_name_it(release, core_name(bed, region, t["arn"], APP, ENDPOINT6))

        def tls():
            from tls_test import CA
            [t] = bed.world("run", {"region": region, "cluster": "web", "subnet": f"{net}.0/24", "family": "api",
                                    "count": 1, "group": "service:api"})
            ns = bed.add_host(region, t["ip"])
            # The certificate is issued by the core from a CA in the emulator's Secrets Manager,
            # for the node and for each `rpc` and `remote` console alike (their own, same address).
            arn = CA("release e2e CA").store(bed, "ecs-peers/release-ca")
            release = Release(bed, root, ns, t["metadata_uri"], ENDPOINT, "tls-" + t["ip"],
                              extra_env={"ECS_PEERS_TLS_CA": arn, "ECS_PEERS_TLS_VALIDITY": "1m"})
            release.start()
            try:
                got = wait_until(release.node, BOOT_TIMEOUT, f"bin/{release.name} rpc to reach the node over TLS "
                                 f"(log: {release.log})", step=0.5)
                assert got == f"{APP}@{t['ip']}", got
                r = release.command("rpc", "IO.inspect(:init.get_argument(:proto_dist))")
                assert "ecs_peers_tls" in r.stdout, f"not over TLS: {r.stdout} {r.stderr}"
                out = remote_says(release, ns, got, 'IO.puts("REMOTE " <> to_string(node()))', f"REMOTE {got}")
                assert f"REMOTE {got}" in out, f"bin/{release.name} remote: {out[-2000:]}"
                return f"{got} over ecs_peers_tls; rpc and remote connect"
            finally:
                release.stop()

        scenario("awsvpc IPv4: the release's node name is the core's", v4, False)
        scenario("awsvpc IPv4 with TLS distribution: the release boots over ecs_peers_tls; rpc and remote connect",
                 tls)
        scenario("awsvpc dual-stack: IPv4, as for peers", v4, True)
        scenario("awsvpc IPv6-only: boots over inet6_tcp, named by its IPv6 address", v6_only)


def bridge(scenario, roots):
    root = roots[APP_BRIDGE]

    with Ec2Bed(interval_ms=1000) as bed:
        print(f"test bed {bed.prefix} (EC2 bridge): logs in {bed.work}", flush=True)
        region, instance_ip = "eu-west-2", f"{VPCS['eu-west-2'][1]}.20"
        bed.add_instance(region, instance_ip)
        [inst] = bed.register_instances(region, "web", [instance_ip])

        def named():
            t = bed.start_ec2_task(region, inst["container_instance"], "api", "bridge", [{"containerPort": 4370}])
            [binding] = [b for b in t["bindings"] if b["containerPort"] == 4370]
            ns, _addr = bed.add_container(instance_ip, {binding["hostPort"]: 4370})
            release = Release(bed, root, ns, t["metadata_uri"], ENDPOINT, t["arn"].rsplit("/", 1)[-1])
            return boots_named_as_its_peers_name_it(release, core_name(bed, region, t["arn"], APP_BRIDGE))

        scenario("ECS on EC2, bridge mode: <basename>-<task id>@<instance address>, over the EPMD-less bridge",
                 named)


def main():
    require_root_and_netns()
    scenario = Scenarios()
    work, roots, seconds = build_releases()
    print(f"releases built in {seconds:.1f}s in {work}", flush=True)
    try:
        awsvpc(scenario, roots)
        bridge(scenario, roots)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return scenario.summary()


if __name__ == "__main__":
    sys.exit(main())
