"""End-to-end: Erlang distribution over TLS (EcsPeers.TLS, -proto_dist ecs_peers_tls) between real
BEAM nodes in ECS task namespaces, clustered by EcsPeers.Strategy against the emulator.

Certificates: a cluster CA and one leaf per task (P-256; SANs: the task's address as iPAddress and
as dNSName, as the core issues them), made by Python's `cryptography` in the bed's own directory for
this run. Until the core issues them (EcsPeers.Native.tls_credentials), each node reads its own
from there through the test issuer `EcsPeers.Test.TLSNode.from_dir/3`
(`-ecs_peers tls_issuer ...`, read when distribution starts; nothing else differs).

It proves:
  - four nodes in two regions mesh over TLS (with EPMD, each task its own);
  - a marker string sent from one node to another is not in a packet capture (tcpdump) of their
    link, while over plain TCP between two other nodes it is;
  - a node with the right cookie and a certificate from another CA, listed by discovery, is
    connected by nobody and connects to nobody; nor is a node whose CA-signed certificate names
    another address;
  - a certificate renewed while the node runs: the cluster stays meshed (no node went down) and a
    new connection is served the new certificate;
  - a console of a node (a hidden node at the node's own address, with that task's certificate,
    as `bin/<release> remote` starts one) connects and calls into it;
  - two IPv6-only tasks mesh over ecs_peers_tls6;
  - ECS on EC2 in bridge mode over the EPMD-less port: two tasks on one instance and one on an
    instance in the other region mesh (siblings arrive from the docker bridge's gateway).

Run as root after `mix test` has compiled elixir/_build/test: python3 tests/e2e/tls_test.py
Prints one line per check and `N passed, N failed`; exits non-zero when any failed.
"""
import datetime
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scenarios import Scenarios
from testbed import (COOKIE, DIST_PORT, EBIN, ENDPOINT6, Bed, Ec2Bed, fully_meshed, node, require_root_and_netns,
                     run, wait_until)

CA_ARN = "arn:aws:secretsmanager:eu-west-2:111122223333:secret:ecs-peers/web-ca-AbCdEf"
REGIONS = {"eu-west-2": 2, "us-west-2": 2}
MARKER = "ecs-peers-marker-7f3a9c51"
PLAIN = '[[type: :ecs, region: "eu-west-2", cluster: "web", service: "plain"]]'


# -- certificates ------------------------------------------------------------------------------
class CA:
    def __init__(self, name):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, directory, address):
        """A leaf for `address` written to `directory` (cert.der, key.der, ca.der); its DER."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address)), x509.DNSName(address)])
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=2))
                .add_extension(san, critical=False)
                .sign(self.key, hashes.SHA256()))
        os.makedirs(directory, exist_ok=True)
        der = cert.public_bytes(serialization.Encoding.DER)
        files = {"cert.der": der,
                 "key.der": key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                              serialization.NoEncryption()),
                 "ca.der": self.cert.public_bytes(serialization.Encoding.DER)}
        for name, data in files.items():
            with open(os.path.join(directory, name + ".new"), "wb") as f:
                f.write(data)
            os.replace(os.path.join(directory, name + ".new"), os.path.join(directory, name))
        return der


def tls_flags(directory, proto="ecs_peers_tls"):
    """erl flags for TLS distribution with the credentials in `directory` (no spaces). The code
    path too: distribution starts before `elixir -pa` adds it."""
    return (f'-pa {EBIN} -proto_dist {proto} '
            f'-ecs_peers tls_issuer {{\'Elixir.EcsPeers.Test.TLSNode\',from_dir,["{directory}",86400]}}')


TLS_ENV = {"ECS_PEERS_TLS_CA": CA_ARN}


def console(bed, ip, code, tls_dir=None, proto="ecs_peers_tls", name="console"):
    """A hidden node at the address of the node at `ip`, in its namespace, as `bin/<release> remote`
    starts one: runs `code` (Elixir) and returns its standard output."""
    flags = tls_flags(tls_dir, proto) if tls_dir else ""
    env = dict(os.environ, HOME=bed.work, **(TLS_ENV if tls_dir else {}))
    r = bed.ns_exec(bed.hosts[ip]["ns"], "elixir", "--name", f"{name}@{ip}", "--cookie", COOKIE, "--hidden",
                    "--erl", flags, "-pa", EBIN, "-e", code, env=env, check=False, timeout=120)
    assert r.returncode == 0, f"the console at {ip} exited {r.returncode}: {r.stdout[-2000:]} {r.stderr[-2000:]}"
    return r.stdout


def rpc_code(target, call):
    """Elixir that connects to `target` and prints inspect(`call` run there)."""
    return (f'true = Node.connect(:"{target}"); '
            f'IO.puts("RESULT " <> inspect(:rpc.call(:"{target}", {call})))')


def result(out):
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line in {out[-2000:]}"
    return lines[-1][len("RESULT "):]


def main():
    require_root_and_netns()
    check = Scenarios()
    if not run("sh", "-c", "command -v tcpdump", check=False).stdout.strip():
        sys.exit("tcpdump is not installed (scripts/lib.sh ensure_testbed_tools installs it)")

    with Bed(interval_ms=500, ipv6=True) as bed:
        print(f"test bed {bed.prefix} (TLS distribution): logs in {bed.work}", flush=True)
        ca = CA("ecs-peers e2e cluster CA")
        tls_dir = lambda ip: os.path.join(bed.work, "tls", ip)  # noqa: E731
        # Service "plain" (two tasks in eu-west-2): nodes over plain TCP, clustered on their own.
        world = bed.seed(REGIONS)
        plain = [t["ip"] for t in bed.world("run", {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
                                                    "family": "plain", "count": 2, "group": "service:plain"})]
        ips = []
        for region, ts in world.items():
            for t in ts:
                bed.add_host(region, t["ip"])
                ca.issue(tls_dir(t["ip"]), t["ip"])
                bed.start_node(t["ip"], erl_flags=tls_flags(tls_dir(t["ip"])), env=TLS_ENV)
                ips.append(t["ip"])
        for ip in plain:
            bed.add_host("eu-west-2", ip)
            bed.start_node(ip, sources=PLAIN)

        def dump_logs(which):
            for ip in which:
                print(f"--- {ip}: {json.dumps(bed.status(ip))}\n{bed.log(ip)[-1500:]}", flush=True)

        def meshed():
            try:
                wait_until(lambda: fully_meshed(bed, ips), 120, f"the {len(ips)} TLS nodes to mesh")
                wait_until(lambda: fully_meshed(bed, plain), 120, "the two plain-TCP nodes to mesh")
            except AssertionError:
                dump_logs(ips + plain)
                raise
            a = ips[0]
            out = console(bed, a, rpc_code(node(a), ":net_kernel, :node_info, [:\"" + node(ips[1]) + "\"]"),
                          tls_dir(a))
            assert ":tls" in result(out), f"{node(a)}'s link to {node(ips[1])} is not TLS: {out[-1500:]}"
            return f"{len(ips)} nodes over TLS; the link {node(a)}–{node(ips[1])} is :tls"

        if not check("TLS nodes in two regions mesh through the strategy (EPMD)", meshed):
            sys.exit(check.summary())

        def capture(a, b, a_tls):
            """Whether MARKER appears in a capture of the link between a and b while a sends it to b."""
            pcap = os.path.join(bed.work, f"{a}-{b}.pcap")
            # On the VPC's bridge in the router namespace: every packet between a and b crosses it.
            bridge = "bra"
            dump = subprocess.Popen(["ip", "netns", "exec", bed.router, "tcpdump", "-i", bridge, "-U", "-s", "0",
                                     "-w", pcap, "tcp", "and", "host", a, "and", "host", b],
                                    stdout=subprocess.DEVNULL, stderr=open(pcap + ".log", "w"))

            def log():
                with open(pcap + ".log") as f:
                    return f.read()

            def packets():
                return run("tcpdump", "-r", pcap, "-nn", check=False).stdout.count("\n")

            try:
                wait_until(lambda: "listening on" in log(), 20, "tcpdump to listen")
                call = f':erlang, :send, [{{:no_such_process, :"{node(b)}"}}, "{MARKER}"]'
                out = console(bed, a, rpc_code(node(a), call), tls_dir(a) if a_tls else None)
                assert result(out) == f'"{MARKER}"', out[-1500:]
                wait_until(lambda: packets() > 0, 20, f"a packet between {a} and {b} in {pcap}")
            finally:
                dump.terminate()
                dump.wait(10)
            with open(pcap, "rb") as f:
                data = f.read()
            return MARKER.encode() in data

        def marker_hidden():
            assert capture(plain[0], plain[1], False), "over plain TCP the marker must be in the capture"
            assert not capture(ips[0], ips[1], True), "the marker is readable in the TLS link's capture"
            return "visible over TCP, not over TLS"

        check("a marker sent between two nodes is not in a capture of their TLS link (it is over TCP)", marker_hidden)

        def refused(label, issue):
            t = bed.run_task("eu-west-2")
            ip = t["ip"]
            bed.add_host("eu-west-2", ip)
            issue(tls_dir(ip), ip)
            bed.start_node(ip, erl_flags=tls_flags(tls_dir(ip)), env=TLS_ENV)
            # The intruder's task is listed: every node dials it, it dials every node, each poll.
            try:
                wait_until(lambda: all(set((bed.status(i) or {}).get("known") or []) >= {node(ip)} for i in ips)
                           and ((bed.status(ip) or {}).get("poll") or 0) >= 4, 60,
                           f"every node to list {node(ip)} and it to poll four times")
                polls = {i: bed.status(i)["poll"] for i in ips}
                wait_until(lambda: all(bed.status(i)["poll"] >= polls[i] + 2 for i in ips), 60,
                           "two more polls on every node")
            except AssertionError:
                dump_logs([ip])
                raise
            assert (bed.status(ip) or {}).get("nodes") == [], bed.status(ip)
            assert fully_meshed(bed, ips), [bed.status(i)["nodes"] for i in ips]
            bed.kill_node(ip)
            bed.stop_task("eu-west-2", t["arn"])
            return f"{node(ip)} ({label}) connected by nobody after {bed.status(ips[0])['poll'] - polls[ips[0]]} polls"

        other_ca = CA("another CA")
        check("a listed node with the right cookie but a certificate from another CA cannot connect",
              refused, "another CA", other_ca.issue)
        check("a listed node with a CA-signed certificate for another address cannot connect",
              refused, "certificate for 10.201.0.250", lambda d, _ip: ca.issue(d, "10.201.0.250"))

        def served_sha256(a):
            """What a new connection to a's distribution port is served, seen from a console of b."""
            b = ips[1]
            ip = "{" + a.replace(".", ", ") + "}"
            code = ("{:ok, _} = Application.ensure_all_started(:ssl); "
                    "{:port, port, _} = :erl_epmd.port_please(~c\"app\", " + ip +
                    "); {:ok, dir} = {:ok, ~c\"" + tls_dir(b) + "\"}; "
                    "read = fn n -> File.read!(Path.join(dir, n)) end; "
                    "{:ok, s} = :ssl.connect(" + ip + ", port, "
                    "[cert: read.(\"cert.der\"), key: {:ECPrivateKey, read.(\"key.der\")}, cacerts: [read.(\"ca.der\")], "
                    "verify: :verify_peer, server_name_indication: ~c\"" + a + "\", active: false], 10_000); "
                    "{:ok, der} = :ssl.peercert(s); "
                    "IO.puts(\"RESULT \" <> Base.encode16(:crypto.hash(:sha256, der), case: :lower))")
            return result(console(bed, b, code, tls_dir(b), name="certprobe"))

        def renewed():
            a = ips[0]
            before = served_sha256(a)
            assert before == hashlib.sha256(open(os.path.join(tls_dir(a), "cert.der"), "rb").read()).hexdigest()
            new = ca.issue(tls_dir(a), a)
            out = console(bed, a, rpc_code(node(a), "EcsPeers.TLS, :renew, []"), tls_dir(a))
            assert result(out).startswith("{:ok,"), out[-1500:]
            after = served_sha256(a)
            assert after == hashlib.sha256(new).hexdigest() and after != before, (before, after)
            assert fully_meshed(bed, ips), [bed.status(i)["nodes"] for i in ips]
            assert all(bed.status(i)["restarts"] == 0 for i in ips)
            return "new connections get the new certificate; the mesh held"

        check("a certificate renewed while running: still meshed, new connections use it", renewed)

        def console_connects():
            a = ips[2]
            out = console(bed, a, rpc_code(node(a), ":erlang, :node, []"), tls_dir(a), name="rem-1234-app")
            assert result(out) == f':"{node(a)}"', out[-1500:]
            return f"rem-1234-app@{a} called {node(a)}"

        check("a console at the node's address, with the task's certificate, connects", console_connects)

        def ipv6_pair():
            tasks = bed.seed6({"eu-west-2": 2})["eu-west-2"]
            six = [t["ipv6"] for t in tasks]
            src = '[[type: :ecs, region: "eu-west-2", cluster: "web", family: "api"]]'
            for t in tasks:
                bed.add_host6("eu-west-2", t["ipv6"])
                ca.issue(tls_dir(t["ipv6"]), t["ipv6"])
                bed.start_node(t["ipv6"], endpoint=ENDPOINT6, sources=src,
                               erl_flags=tls_flags(tls_dir(t["ipv6"]), "ecs_peers_tls6"), env=TLS_ENV)
            try:
                wait_until(lambda: all(node(o) in ((bed.status(i) or {}).get("nodes") or [])
                                       for i in six for o in six if o != i), 120, "the IPv6 pair to mesh")
            except AssertionError:
                dump_logs(six)
                raise
            return f"{node(six[0])} and {node(six[1])}"

        check("two IPv6-only tasks mesh over ecs_peers_tls6", ipv6_pair)

    bridge(check)
    sys.exit(check.summary())


def bridge(check):
    """ECS on EC2 in bridge mode over the EPMD-less port: two tasks on one instance (they reach
    each other through the instance's address and arrive from the docker bridge's gateway) and
    one on an instance in the other region; each certificate names its instance's address."""
    with Ec2Bed(interval_ms=500) as bed:
        print(f"EC2 bed {bed.prefix} (TLS, bridge mode): logs in {bed.work}", flush=True)
        eu_ip, us_ip = "10.201.0.10", "10.202.0.10"
        (eu_ci,) = bed.register_instances("eu-west-2", "web", [eu_ip])
        (us_ci,) = bed.register_instances("us-west-2", "web", [us_ip])
        ca = CA("ecs-peers e2e bridge CA")
        for region, ip in (("eu-west-2", eu_ip), ("us-west-2", us_ip)):
            bed.add_instance(region, ip)
            ca.issue(os.path.join(bed.work, "tls", ip), ip)
        keys = []
        for region, ci, ip in (("eu-west-2", eu_ci, eu_ip), ("eu-west-2", eu_ci, eu_ip), ("us-west-2", us_ci, us_ip)):
            t = bed.start_ec2_task(region, ci["container_instance"], "br", "bridge", [{"containerPort": DIST_PORT}])
            ns, _addr = bed.add_container(ip, {b["hostPort"]: b["containerPort"] for b in t["bindings"]})
            key = t["arn"].rsplit("/", 1)[-1]
            bed.start_epmdless_node(key, ns, f"app-{key}@{ip}", metadata_uri=t["metadata_uri"], extra_env=TLS_ENV,
                                    erl_flags=tls_flags(os.path.join(bed.work, "tls", ip)))
            keys.append(key)

        def meshed():
            names = {k: bed.beams[k]["name"] for k in keys}
            try:
                wait_until(lambda: all(bed.beam_sees(k, [n for o, n in names.items() if o != k]) for k in keys), 120,
                           "the bridge-mode nodes to mesh over TLS")
            except AssertionError:
                for k in keys:
                    print(f"--- {names[k]}: {json.dumps(bed.beam_status(k))}\n{bed.beam_log(k)[-1500:]}", flush=True)
                raise
            return f"{len(keys)} nodes: two on {eu_ip}, one on {us_ip}"

        check("bridge mode over the EPMD-less port: tasks on one instance and on two instances mesh over TLS", meshed)


if __name__ == "__main__":
    main()
