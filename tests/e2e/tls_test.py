"""End-to-end: Erlang distribution over TLS (EcsPeers.TLS, -proto_dist ecs_peers_tls) between real
BEAM nodes in ECS task namespaces, clustered by EcsPeers.Strategy against the emulator.

Certificates: issued for real. A cluster CA (P-256) is made in the test by Python's `cryptography`
(no key material is committed) and stored in the emulator's Secrets Manager (and, for one node,
as an SSM SecureString parameter); each node has only `ECS_PEERS_TLS_CA` (its ARN),
`ECS_PEERS_TLS_VALIDITY` and the task metadata endpoint the ECS agent gives every container, and
the core (EcsPeers.Native.tls_credentials) issues its certificate inside distribution's start, as
in a task. The validity is one minute (the key's least): every node renews every 40 s while the
test runs.

It proves:
  - four nodes in two regions mesh over TLS (with EPMD, each task its own);
  - a marker string sent from one node to another is not in a packet capture (tcpdump) of their
    link, while over plain TCP between two other nodes it is;
  - a node with the right cookie and a certificate from another CA, listed by discovery, is
    connected by nobody and connects to nobody; nor is a node whose CA-signed certificate names
    another address (it read another task's metadata); nor a node with a valid certificate for its
    own listed address that claims another node's name;
  - certificates renewed while the nodes run: the cluster stays meshed (no node went down) and a
    new connection is served the new certificate (a new serial);
  - a console of a node (a hidden node at the node's own address, with that task's certificate,
    as `bin/<release> remote` starts one) connects and calls into it;
  - two IPv6-only tasks mesh over ecs_peers_tls6;
  - ECS on EC2 in bridge mode over the EPMD-less port: two tasks on one instance and one on an
    instance in the other region mesh (siblings arrive from the docker bridge's gateway).

Run as root after `mix test` has compiled elixir/_build/test (and the NIF is built):
python3 tests/e2e/tls_test.py
Prints one line per check and `N passed, N failed`; exits non-zero when any failed.
"""
import datetime
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
from testbed import (COOKIE, DIST_PORT, EBIN, ENDPOINT, ENDPOINT6, PYTHON, Bed, Ec2Bed, fully_meshed, global_cuts,
                     node, require_root_and_netns, run, wait_until)

# Each certificate's validity (the tls_validity key's least): renewed every 40 s.
VALIDITY = "1m"
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

    def pem(self):
        """The secret's value: the CA certificate and its key, PEM, concatenated."""
        return (self.cert.public_bytes(serialization.Encoding.PEM)
                + self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())).decode()

    def store(self, bed, name, service="secretsmanager"):
        """Stores the CA in the bed's emulator (eu-west-2) as the secret (or SSM SecureString
        parameter) `name`; returns its ARN, the value of ECS_PEERS_TLS_CA."""
        r = bed.ns_exec(bed.router, PYTHON, "-c", STORE, ENDPOINT, service, name, input=self.pem())
        return r.stdout.strip()


STORE = """import sys, boto3
endpoint, service, name = sys.argv[1:4]
c = boto3.client(service, region_name="eu-west-2", endpoint_url=endpoint,
                 aws_access_key_id="test", aws_secret_access_key="test")
pem = sys.stdin.read()
if service == "secretsmanager":
    print(c.create_secret(Name=name, SecretString=pem)["ARN"])
else:
    c.put_parameter(Name=name, Value=pem, Type="SecureString")
    print(c.get_parameter(Name=name)["Parameter"]["ARN"])
"""


def tls_flags(proto="ecs_peers_tls"):
    """erl flags for TLS distribution. The code path too: distribution starts before `elixir -pa`
    adds it."""
    return f"-pa {EBIN} -proto_dist {proto}"


def tls_env(ca_arn, endpoint=ENDPOINT):
    """A TLS node's environment besides its task metadata endpoint: the CA's ARN, the validity,
    and the emulator as every AWS endpoint (AWS_ENDPOINT_URL, the SDK's own variable)."""
    return {"ECS_PEERS_TLS_CA": ca_arn, "ECS_PEERS_TLS_VALIDITY": VALIDITY, "AWS_ENDPOINT_URL": endpoint}


def console(bed, ip, code, tls=None, proto="ecs_peers_tls", name="console", at=None):
    """A hidden node named `name@<at or ip>` in the namespace of the task at `ip`, as
    `bin/<release> remote` starts one: runs `code` (Elixir) and returns its standard output.
    `tls`: its environment (tls_env); its certificate is issued for the task at `ip` (its
    metadata endpoint)."""
    # A console dials once: on a loaded machine the first TLS set-up of a VM (ssl's code loaded,
    # a handshake at each end) can pass kernel's default 7 s net_setuptime.
    flags = (tls_flags(proto) if tls else "") + " -kernel net_setuptime 30"
    env = dict(os.environ, HOME=bed.work, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_EC2_METADATA_DISABLED="true", **(tls or {}))
    env.pop("ECS_CONTAINER_METADATA_URI_V4", None)
    if tls:
        env["ECS_CONTAINER_METADATA_URI_V4"] = bed.metadata_uri(ip)
    r = bed.ns_exec(bed.hosts[ip]["ns"], "elixir", "--name", f"{name}@{at or ip}", "--cookie", COOKIE, "--hidden",
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
        tls = tls_env(ca.store(bed, "ecs-peers/web-ca"))
        # One node reads the same CA from SSM Parameter Store.
        tls_ssm = tls_env(ca.store(bed, "/ecs-peers/web-ca", "ssm"))
        # Service "plain" (two tasks in eu-west-2): nodes over plain TCP, clustered on their own.
        world = bed.seed(REGIONS)
        plain = [t["ip"] for t in bed.world("run", {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
                                                    "family": "plain", "count": 2, "group": "service:plain"})]
        ips = []
        for region, ts in world.items():
            for t in ts:
                bed.add_host(region, t["ip"])
                bed.start_node(t["ip"], erl_flags=tls_flags(), env=tls_ssm if not ips else tls)
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
            out = console(bed, a, rpc_code(node(a), ":net_kernel, :node_info, [:\"" + node(ips[1]) + "\"]"), tls)
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
                out = console(bed, a, rpc_code(node(a), call), tls if a_tls else None)
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

        def refused(label, env, metadata_of=None):
            """A listed task's node with `env`; its certificate is issued for the task whose
            metadata it reads (`metadata_of`: another task's address; default its own)."""
            t = bed.run_task("eu-west-2")
            ip = t["ip"]
            bed.add_host("eu-west-2", ip)
            bed.start_node(ip, erl_flags=tls_flags(), env=env,
                           metadata_uri=bed.metadata_uri(metadata_of) if metadata_of else None)
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

        other_ca = tls_env(CA("another CA").store(bed, "ecs-peers/another-ca"))
        check("a listed node with the right cookie but a certificate from another CA cannot connect",
              refused, "another CA", other_ca)
        check("a listed node with a CA-signed certificate for another address cannot connect",
              refused, f"certificate for {ips[1]}", tls, ips[1])

        def name_taken():
            """A listed task's node, with a certificate for its own address, that claims the name
            of another node (app@<ips[1]>) cannot connect to the cluster."""
            t = bed.run_task("eu-west-2")
            ip, victim = t["ip"], ips[1]
            bed.add_host("eu-west-2", ip)
            wait_until(lambda: all(node(ip) in ((bed.status(i) or {}).get("known") or []) for i in ips), 60,
                       f"every node to list {node(ip)}")
            code = (f'IO.puts("RESULT " <> inspect(Enum.map({json.dumps([node(i) for i in ips if i != victim])}, '
                    '&Node.connect(String.to_atom(&1)))))')
            # The control: under a name at its own address, the same node connects.
            out = console(bed, ip, code, tls, name="own")
            assert result(out) == "[" + ", ".join(["true"] * (len(ips) - 1)) + "]", out[-1500:]
            out = console(bed, ip, code, tls, name="app", at=victim)
            assert result(out) == "[" + ", ".join(["false"] * (len(ips) - 1)) + "]", out[-1500:]
            assert fully_meshed(bed, ips), [bed.status(i)["nodes"] for i in ips]
            bed.stop_task("eu-west-2", t["arn"])
            return f"{ip} with its own certificate, named {node(victim)}: refused by the {len(ips) - 1} others"

        check("a node claiming another node's name cannot connect", name_taken)

        def served_serial(a):
            """The serial of the certificate a new connection to a's distribution port is served,
            seen from a console of b with b's own credentials (issued by the core)."""
            b = ips[1]
            ip = "{" + a.replace(".", ", ") + "}"
            code = ("{:ok, _} = Application.ensure_all_started(:ssl); "
                    "{:ok, config} = EcsPeers.TLS.read_config(System.get_env()); "
                    "{:ok, c} = EcsPeers.TLS.credentials(config); "
                    "{:port, port, _} = :erl_epmd.port_please(~c\"app\", " + ip + "); "
                    "{:ok, s} = :ssl.connect(" + ip + ", port, [cert: c.cert, key: c.key, cacerts: c.cacerts, "
                    "verify: :verify_peer, server_name_indication: ~c\"" + a + "\", "
                    "customize_hostname_check: [match_fun: &EcsPeers.TLS.match_address/2], active: false], 10_000); "
                    "{:ok, der} = :ssl.peercert(s); "
                    "IO.puts(\"RESULT \" <> Integer.to_string(elem(elem(:public_key.pkix_decode_cert(der, :otp), 1), 2)))")
            return result(console(bed, b, code, tls, name="certprobe"))

        def renewed():
            a = ips[0]
            not_after = lambda: int(result(console(bed, a, rpc_code(node(a), "EcsPeers.TLS, :not_after, []"),  # noqa: E731
                                                   tls)))
            before, first = served_serial(a), not_after()
            wait_until(lambda: not_after() > first, 90, f"{node(a)} to renew its certificate", step=5)
            after = served_serial(a)
            assert after != before, (before, after)
            assert fully_meshed(bed, ips), [bed.status(i)["nodes"] for i in ips]
            assert all(bed.status(i)["restarts"] == 0 for i in ips)
            return f"serial {before} then {after}; the mesh held, no restarts"

        check("a certificate renewed while running: still meshed, new connections use it", renewed)

        def joins_whole():
            """A TLS node whose first polls of us-west-2 are throttled: it lists only the eu-west-2
            nodes, so it would accept those and refuse the us-west-2 ones while they are connected
            to both; OTP's global cuts such a partial mesh. It must wait for every source's first
            answer, then join with nothing cut."""
            before = len(global_cuts(bed))
            t = bed.run_task("eu-west-2")
            ip = t["ip"]
            bed.add_host("eu-west-2", ip)
            bed.faults("POST", [{"operation": "ListTasks", "region": "us-west-2", "caller": ip, "count": 1_000_000,
                                 "status": 400, "code": "ThrottlingException", "message": "Rate exceeded"}])
            try:
                bed.start_node(ip, erl_flags=tls_flags(), env=tls)
                wait_until(lambda: ((bed.status(ip) or {}).get("poll") or 0) >= 8, 60,
                           f"{node(ip)} to poll eight times with us-west-2 throttled")
                waiting = bed.status(ip)["nodes"]
            finally:
                bed.faults("DELETE")
            try:
                wait_until(lambda: fully_meshed(bed, ips + [ip]), 60, f"{node(ip)} to join once us-west-2 answers")
            except AssertionError:
                dump_logs([ip])
                raise
            cuts = global_cuts(bed)[before:]
            assert waiting == [], f"connected while it knew part of the cluster: {waiting}"
            assert cuts == [], "\n".join(line for _, line in cuts)
            bed.kill_node(ip)
            bed.stop_task("eu-west-2", t["arn"])
            wait_until(lambda: all(node(ip) not in (bed.status(i) or {}).get("nodes", []) for i in ips), 60,
                       f"{node(ip)} to be dropped")
            return f"{node(ip)} connected to nobody through 8 throttled polls, then joined all {len(ips)}; 0 global cuts"

        check("a node whose first polls of a region are throttled joins once it answers, and global cuts nothing",
              joins_whole)

        def console_connects():
            a = ips[2]
            out = console(bed, a, rpc_code(node(a), ":erlang, :node, []"), tls, name="rem-1234-app")
            assert result(out) == f':"{node(a)}"', out[-1500:]
            return f"rem-1234-app@{a} called {node(a)}"

        check("a console at the node's address, with the task's certificate, connects", console_connects)

        def ipv6_pair():
            tasks = bed.seed6({"eu-west-2": 2})["eu-west-2"]
            six = [t["ipv6"] for t in tasks]
            src = '[[type: :ecs, region: "eu-west-2", cluster: "web", family: "api"]]'
            for t in tasks:
                bed.add_host6("eu-west-2", t["ipv6"])
                bed.start_node(t["ipv6"], endpoint=ENDPOINT6, sources=src, erl_flags=tls_flags("ecs_peers_tls6"),
                               env=tls_env(tls["ECS_PEERS_TLS_CA"], ENDPOINT6))
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
        tls = tls_env(CA("ecs-peers e2e bridge CA").store(bed, "ecs-peers/bridge-ca"))
        for region, ip in (("eu-west-2", eu_ip), ("us-west-2", us_ip)):
            bed.add_instance(region, ip)
        keys = []
        for region, ci, ip in (("eu-west-2", eu_ci, eu_ip), ("eu-west-2", eu_ci, eu_ip), ("us-west-2", us_ci, us_ip)):
            t = bed.start_ec2_task(region, ci["container_instance"], "br", "bridge", [{"containerPort": DIST_PORT}])
            ns, _addr = bed.add_container(ip, {b["hostPort"]: b["containerPort"] for b in t["bindings"]})
            key = t["arn"].rsplit("/", 1)[-1]
            bed.start_epmdless_node(key, ns, f"app-{key}@{ip}", metadata_uri=t["metadata_uri"], extra_env=tls,
                                    erl_flags=tls_flags())
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
