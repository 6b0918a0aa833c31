"""End-to-end: the TLS doctor against real BEAM nodes over ecs_peers_tls. `ecs-peers doctor
--tls-ca ...`, run inside a TLS task's namespace (with that task's certificate, as through ECS
Exec), and the in-process diagnosis every node runs for a peer it cannot connect to, each tell
what is wrong with a listed peer's TLS, with the fix.

One bed (testbed.Bed, eu-west-2, service "api"): two healthy TLS nodes (A, B; tls_validity 1h),
checked first (no diagnosis; the per-peer TLS facts: speaks TLS, chain at our CA, names its
address, expiry). Then five broken tasks of the same service, all at once (each is its own
peer, so one doctor run and one wait cover them all):

  clear      plain inet_tcp while the others run TLS (a rollout's mixed cluster):
             tls_clear_text_peer; and the clear node itself says tls_expected_by_peer of A and B;
  other-ca   certificate issued by the core from another CA:          tls_other_ca;
  other-addr certificate issued by the core from our CA for A's address (it read A's task
             metadata):                                                tls_wrong_address;
  expired    our CA, its own address, notAfter an hour ago:           tls_expired;
  expiring   our CA, its own address, notAfter in 10 min (the doctor's margin at 1h is a quarter,
             15 min):                                                  tls_expiring.

The last two are made here (Python's `cryptography`) and handed to the node by a tls_issuer
(`-ecs_peers tls_issuer {e2e_issuer,issue,[]}`, an Erlang module compiled here that reads them
with prim_file, as docs/tls.md says an issuer must). For each, the doctor gives exactly that code
with its fix; for the four that stop a connection, A and B each log that code with the same fix
exactly once and show it in status/1 as the peer's unreachable reason; the expiring node is
connected (its certificate is still valid). Run as root after `mix test` has compiled
elixir/_build/test: python3 tests/e2e/tls_doctor_test.py. Prints one line per check and
`N passed, N failed`.
"""
import datetime
import ipaddress
import json
import os
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from doctor_test import BIN
from scenarios import Scenarios
from testbed import COOKIE, ENDPOINT, Bed, fully_meshed, node, require_root_and_netns, run, wait_until
from tls_test import CA, tls_flags

VALIDITY = "1h"
# A quarter of VALIDITY (src/doctor/tls.rs expiring_margin): less left is "expiring".
MARGIN_S = 900
SOURCES = '[[type: :ecs, region: "eu-west-2", cluster: "web", service: "api"]]'
SHAPE_POLLS = 4  # polls after every diagnosis during which none may be logged again

ISSUER = """-module(e2e_issuer).
-export([issue/1]).
%% A tls_issuer for the test: the credentials in the files of $E2E_TLS_DIR, made by the test.
%% It runs before kernel's file server exists: prim_file.
issue(_Config) ->
    Dir = os:getenv("E2E_TLS_DIR"),
    Read = fun(Name) -> {ok, B} = prim_file:read_file(Dir ++ "/" ++ Name), B end,
    Now = erlang:system_time(second),
    {ok, #{cert => Read("cert.der"), key => {'ECPrivateKey', Read("key.der")},
           cacerts => [Read("ca.der")], not_after => binary_to_integer(Read("not_after")),
           renew_at => Now + 86400, names => [Read("ip")]}}.
"""


def leaf(ca, ip, not_before, not_after, directory):
    """A certificate of `ca` for `ip` (as the core issues one: iPAddress and dNSName SANs, serverAuth
    and clientAuth) valid from `not_before` to `not_after`, written for e2e_issuer to `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)), x509.DNSName(ip)]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    files = {"cert.der": cert.public_bytes(serialization.Encoding.DER),
             "key.der": key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()),
             "ca.der": ca.cert.public_bytes(serialization.Encoding.DER),
             "not_after": str(int(not_after.timestamp())).encode(), "ip": ip.encode()}
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    return int(not_after.timestamp())


def main():
    require_root_and_netns()
    check = Scenarios()
    with Bed(interval_ms=1000) as bed:
        print(f"test bed {bed.prefix} (the TLS doctor): logs in {bed.work}", flush=True)
        ca = CA("ecs-peers e2e cluster CA")
        arn = ca.store(bed, "ecs-peers/web-ca")
        tls = {"ECS_PEERS_TLS_CA": arn, "ECS_PEERS_TLS_VALIDITY": VALIDITY, "AWS_ENDPOINT_URL": ENDPOINT}
        ebin = os.path.join(bed.work, "issuer")
        os.makedirs(ebin)
        with open(os.path.join(ebin, "e2e_issuer.erl"), "w") as f:
            f.write(ISSUER)
        run("erlc", "-o", ebin, os.path.join(ebin, "e2e_issuer.erl"))

        healthy = [t["ip"] for t in bed.seed({"eu-west-2": 2})["eu-west-2"]]
        for ip in healthy:
            bed.add_host("eu-west-2", ip)
            bed.start_node(ip, sources=SOURCES, erl_flags=tls_flags(), env=tls)
        a = healthy[0]

        def doctor(text=False):
            """`ecs-peers doctor --tls-ca` in A's namespace, with A's task metadata (its certificate)."""
            args = [BIN, "doctor", "--ecs", "eu-west-2/web/api", "--basename", "app", "--endpoint-url", ENDPOINT,
                    "--max-attempts", "1", "--check-timeout", "2s", "--tls-ca", arn, "--tls-validity", VALIDITY]
            env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", RELEASE_COOKIE=COOKIE,
                       AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL=ENDPOINT,
                       ECS_CONTAINER_METADATA_URI_V4=bed.metadata_uri(a))
            r = bed.ns_exec(bed.hosts[a]["ns"], *args, *([] if text else ["--json"]), check=False, env=env)
            assert "without a certificate of its own" not in r.stderr, r.stderr
            if text:
                return r.stdout
            assert r.returncode in (0, 5), f"doctor exited {r.returncode}: {r.stderr}"
            return r.returncode, json.loads(r.stdout)

        def healthy_cluster():
            wait_until(lambda: fully_meshed(bed, healthy), 120, "the two TLS nodes to mesh")
            code, report = doctor()
            assert (code, report["diagnoses"]) == (0, []), json.dumps(report["diagnoses"], indent=1)
            for p in report["peers"]:
                t = p["tls"]
                c = t["certificate"]
                assert (t["speaks_tls"], t["outcome"]["result"], c["issuer_ok"], c["names_address"]) == \
                    (True, "ok", True, True), p
                assert MARGIN_S < c["expires_in_s"] <= 3600 and p["handshake"]["result"] == "ok", p
                assert t["expiring_margin_s"] == MARGIN_S, t
            return f"{len(report['peers'])} peers: TLS, our CA, their address, expiring in ~1 h, handshake ok"

        if not check("a healthy TLS cluster: the doctor finds no problem and reports each peer's TLS facts",
                     healthy_cluster):
            sys.exit(check.summary())

        # The broken tasks, all listed in the same service.
        other_ca = dict(tls, ECS_PEERS_TLS_CA=CA("another CA").store(bed, "ecs-peers/another-ca"))
        now = datetime.datetime.now(datetime.timezone.utc)
        broken = {}
        mark = {ip: len(bed.log(ip)) for ip in healthy}
        for label in ("clear", "other-ca", "other-addr", "expired", "expiring"):
            ip = bed.run_task("eu-west-2")["ip"]
            bed.add_host("eu-west-2", ip)
            broken[label] = ip
        for label, ip in broken.items():
            if label == "clear":
                bed.start_node(ip, sources=SOURCES)
            elif label == "other-ca":
                bed.start_node(ip, sources=SOURCES, erl_flags=tls_flags(), env=other_ca)
            elif label == "other-addr":
                bed.start_node(ip, sources=SOURCES, erl_flags=tls_flags(), env=tls, metadata_uri=bed.metadata_uri(a))
            else:
                hours = datetime.timedelta(hours=1)
                not_before, not_after = ((now - 2 * hours, now - hours) if label == "expired"
                                         else (now - hours, now + datetime.timedelta(minutes=10)))
                leaf(ca, ip, not_before, not_after, os.path.join(bed.work, label))
                bed.start_node(ip, sources=SOURCES, env=dict(tls, E2E_TLS_DIR=os.path.join(bed.work, label)),
                               erl_flags=f"{tls_flags()} -pa {ebin} -ecs_peers tls_issuer {{e2e_issuer,issue,[]}}")
        expected = {"clear": "tls_clear_text_peer", "other-ca": "tls_other_ca", "other-addr": "tls_wrong_address",
                    "expired": "tls_expired", "expiring": "tls_expiring"}
        subject = {label: f"{node(ip)} (eu-west-2)" for label, ip in broken.items()}
        everyone = healthy + list(broken.values())

        def dump(which):
            for ip in which:
                print(f"--- {ip}: {json.dumps(bed.status(ip))}\n{bed.log(ip)[-2500:]}", flush=True)

        try:
            wait_until(lambda: all((bed.status(ip) or {}).get("poll", 0) >= 2 for ip in everyone), 120,
                       "every node to run and poll twice")
        except AssertionError:
            dump(everyone)
            raise
        # Where A's and B's logs stood when every broken node was up.
        up = {ip: len(bed.log(ip)) for ip in healthy}
        by_doctor = {}

        def the_doctor():
            code, report = doctor()
            got = {d["subject"]: d for d in report["diagnoses"]}
            want = {subject[label]: c for label, c in expected.items()}
            assert code == 5 and {s: d["code"] for s, d in got.items()} == want, \
                f"expected {want}, got {json.dumps(report['diagnoses'], indent=1)}"
            by_doctor.update({label: got[subject[label]] for label in expected})
            peers = {p["node"]: p for p in report["peers"]}

            def facts(label):
                t = peers[node(broken[label])]["tls"]
                c = t["certificate"] or {}
                return t["speaks_tls"], c.get("issuer_ok"), c.get("names_address"), c.get("expires_in_s")

            tls_, ours, named, left = facts("clear")
            assert (tls_, ours) == (False, None), facts("clear")
            tls_, ours, named, left = facts("other-ca")
            assert (tls_, ours, named) == (True, False, True), facts("other-ca")
            tls_, ours, named, left = facts("other-addr")
            assert (tls_, ours, named) == (True, True, False), facts("other-addr")
            names = peers[node(broken["other-addr"])]["tls"]["certificate"]["names"]
            assert a in names and broken["other-addr"] not in names, names
            tls_, ours, named, left = facts("expired")
            assert (tls_, ours, named) == (True, True, True) and -3700 < left < -3500, facts("expired")
            tls_, ours, named, left = facts("expiring")
            assert (tls_, ours, named) == (True, True, True) and 0 < left < MARGIN_S, facts("expiring")
            # The expiring peer is otherwise healthy: the cookie's handshake ran inside TLS.
            assert peers[node(broken["expiring"])]["handshake"]["result"] == "ok", peers[node(broken["expiring"])]
            for ip in healthy:
                t = peers[node(ip)]["tls"]
                assert (t["speaks_tls"], t["certificate"]["issuer_ok"], t["certificate"]["names_address"]) == \
                    (True, True, True), t
            return "; ".join(f"{label}: {d['code']}" for label, d in by_doctor.items())

        if not check("the doctor in a TLS task gives each broken peer its own TLS diagnosis, with the facts",
                     the_doctor):
            dump(everyone)
            sys.exit(check.summary())

        def the_text_report():
            out = doctor(text=True)
            for label, d in by_doctor.items():
                assert f"[{d['code']}] {subject[label]}: " in out, out
                assert f"   Fix: {d['fix']}\n" in out, f"{d['fix']!r} not in {out}"
            # The table's TLS column: each peer's facts, what fails a check in capitals.
            rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("app@")}
            shown = {"clear": "CLEAR TEXT", "other-ca": "OTHER CA, names it, expires in ",
                     "other-addr": f"our CA, NAMES {a} {a} ", "expired": "our CA, names it, EXPIRED ",
                     "expiring": "our CA, names it, EXPIRES IN "}
            for label, words in shown.items():
                assert words in rows[node(broken[label])], f"{label}: {rows[node(broken[label])]!r}"
            for ip in healthy:
                assert "our CA, names it, expires in " in rows[node(ip)], rows[node(ip)]
            return "each code and its fix; the TLS column: " + "; ".join(
                f"{label}: {rows[node(broken[label])].split('  ')[-1].strip()}" for label in shown)

        check("the doctor's text report: each peer's TLS facts, each diagnosis and its fix", the_text_report)

        stopping = [label for label in expected if label != "expiring"]

        def said(ip, label, since=None):
            """The lines of `ip`'s log since the broken nodes started (or `since`) that diagnose
            `label`'s node."""
            head = f"cannot connect to {subject[label]} since "
            return [x for x in bed.log(ip)[mark[ip] if since is None else since:].splitlines() if head in x]

        def in_process():
            def diagnosed():
                return all(said(ip, label) for ip in healthy for label in stopping) and \
                    all({u["node"] for u in (bed.status(ip) or {}).get("unreachable") or []}
                        >= {node(broken[label]) for label in stopping} for ip in healthy)

            try:
                wait_until(diagnosed, 90, "A and B to diagnose every broken peer that cannot connect")
            except AssertionError:
                dump(healthy)
                raise
            polls = {ip: bed.status(ip)["poll"] for ip in healthy}
            wait_until(lambda: all(bed.status(ip)["poll"] >= polls[ip] + SHAPE_POLLS for ip in healthy), 60,
                       f"{SHAPE_POLLS} more polls on A and B")
            for ip in healthy:
                # A status call begun now: the file may hold one that waited on a connect.
                status = bed.fresh_status(ip, 30)
                unreachable = {u["node"]: u for u in status["unreachable"]}
                for label in stopping:
                    want = by_doctor[label]
                    # While its BEAM booted, a listed task may be diagnosed otherwise (no EPMD yet);
                    # once every node is up, only the doctor's diagnosis, once.
                    lines = [x for x in said(ip, label) if f"[{want['code']}] " in x]
                    assert len(lines) == 1, f"{node(ip)} diagnosed {label} {len(lines)} times: {said(ip, label)}"
                    assert lines[0].endswith(f"Fix: {want['fix']}"), f"{node(ip)} says {lines[0]!r}; the doctor {want}"
                    others = [x for x in said(ip, label, since=up[ip]) if f"[{want['code']}] " not in x]
                    assert not others, f"{node(ip)} diagnosed {label} otherwise once it was up: {others}"
                    u = unreachable[node(broken[label])]
                    assert (u["code"], u["fix"]) == (want["code"], want["fix"]), u
                assert node(broken["expiring"]) not in unreachable, unreachable
                assert node(broken["expiring"]) in status["nodes"], status
            return f"A and B: {', '.join(by_doctor[label]['code'] for label in stopping)}, once each; " \
                   "the expiring node connected"

        check("each node logs each TLS diagnosis once, with the doctor's fix, and status/1 shows it", in_process)

        def clear_side():
            clear = broken["clear"]
            head = [f"cannot connect to {node(ip)} (eu-west-2) since " for ip in healthy]
            wait_until(lambda: all(any(h in x and "[tls_expected_by_peer] " in x for x in bed.log(clear).splitlines())
                                   for h in head), 60, f"{node(clear)} to diagnose A and B")
            return f"{node(clear)} says tls_expected_by_peer of {', '.join(node(ip) for ip in healthy)}"

        check("the clear-text node of the mixed cluster says the others require TLS", clear_side)
    return check.summary()


if __name__ == "__main__":
    started = time.monotonic()
    rc = main()
    print(f"tls_doctor_test: {time.monotonic() - started:.0f} s", flush=True)
    sys.exit(rc)
