"""A two-region ECS test bed on one Linux machine: network namespaces as task hosts.

    router namespace  <P>r   "VPC peering": bridge bra = VPC eu-west-2 (10.201.0.0/24, gateway .1),
                             bridge brb = VPC us-west-2 (10.202.0.0/24), IP forwarding between
                             them (on in this namespace only), and the project's AWS emulator
                             (tests/awsemu/run) on 10.200.0.1:5000.
    task namespaces   <P>hN  one per ECS task: eth0 with the task's IP (the emulator hands out
                             task IPs from the subnet, as AWS does), one route to the test
                             supernet 10.200.0.0/14 and no default route; its own EPMD and BEAM.
                             Its BEAM gets ECS_CONTAINER_METADATA_URI_V4 as the ECS agent sets it:
                             the emulator's task metadata endpoint v4 for that task
                             (http://10.200.0.1:5000/v4/<task id>), reached over the same route.

IPv6 (Bed(ipv6=True)): the same bridges also carry IPv6-only "VPCs" (fdec:5ee5:201::/64 and
fdec:5ee5:202::/64, gateway ::1), the emulator also answers on [fdec:5ee5:200::1]:5000 (it listens
on [::], dual-stack, in the router namespace only), and IPv6 task namespaces (add_host6) have only
an IPv6 address and one route, to the IPv6 test prefix fdec:5ee5::/32, which the router
black-holes below its bridge routes exactly like the IPv4 supernet (a ULA prefix: never routed on
the internet). IPv6 forwarding is on in the router namespace only.

Safety: the root namespace is not changed at all; the router namespace black-holes the whole
supernet below its bridge routes; no namespace has a default route, so test traffic cannot leave
the machine. Every name carries a run-unique prefix, and teardown (also on errors and signals)
kills every process in the namespaces and deletes them.
"""
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The emulator's one command, and the venv it runs in (world.py needs its boto3).
EMULATOR = os.path.join(ROOT, "tests", "awsemu", "run")
PYTHON = os.path.join(ROOT, ".venv-awsemu", "bin", "python")
EBIN = os.path.join(ROOT, "elixir", "_build", "test", "lib", "ecs_peers", "ebin")
EMU_IP, EMU_PORT = "10.200.0.1", 5000
ENDPOINT = f"http://{EMU_IP}:{EMU_PORT}"
SUPERNET = "10.200.0.0/14"
# A third VPC (ap-southeast-2) for the bed of `regions: :all`: a region the service starts in
# later; routed like the others (the router is every VPC's peering).
VPCS = {"eu-west-2": ("bra", "10.201.0"), "us-west-2": ("brb", "10.202.0"), "ap-southeast-2": ("brc", "10.203.0")}
COOKIE = "ecs-peers-e2e-" + secrets.token_hex(4)
# IPv6 (Bed(ipv6=True)): a ULA prefix of the bed's own, black-holed in the router.
SUPERNET6 = "fdec:5ee5::/32"
EMU_IP6 = "fdec:5ee5:200::1"
ENDPOINT6 = f"http://[{EMU_IP6}]:{EMU_PORT}"
VPCS6 = {"eu-west-2": "fdec:5ee5:201", "us-west-2": "fdec:5ee5:202"}


def run(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


class Bed:
    def __init__(self, interval_ms=1000, ipv6=False):
        self.ipv6 = ipv6
        self.prefix = "ep" + secrets.token_hex(2)
        self.router = self.prefix + "r"
        self.hosts = {}  # ip -> {"ns", "proc", "status", "log"}
        self.metadata = {}  # task ip -> its task metadata endpoint (ECS_CONTAINER_METADATA_URI_V4)
        self.namespaces = []
        self.emu = None
        self.interval_ms = interval_ms
        self.work = tempfile.mkdtemp(prefix="ecs-peers-e2e-")
        self._n = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            self._setup_router()
            self._start_emulator()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc):
        self.teardown()
        return False

    def _on_signal(self, signum, _frame):
        self.teardown()
        sys.exit(128 + signum)

    def ns_exec(self, ns, *args, check=True, **kw):
        return run("ip", "netns", "exec", ns, *args, check=check, **kw)

    def _add_ns(self, name):
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        self.ns_exec(name, "ip", "link", "set", "lo", "up")

    def _setup_router(self):
        r = self.router
        self._add_ns(r)
        self.ns_exec(r, "ip", "addr", "add", f"{EMU_IP}/32", "dev", "lo")
        # Anything in the test supernet without a more specific route dies here.
        self.ns_exec(r, "ip", "route", "add", "blackhole", SUPERNET)
        for i, (bridge, net) in enumerate(VPCS.values()):
            # A MAC of its own: a bridge without one takes its ports' lowest, which changes as
            # tasks are added, and a task whose ARP entry for its gateway is still the old one
            # then sends to another task's port and reaches nothing beyond its subnet.
            self.ns_exec(r, "ip", "link", "add", bridge, "address", f"02:ec:00:00:00:{i + 1:02x}", "type", "bridge")
            self.ns_exec(r, "ip", "addr", "add", f"{net}.1/24", "dev", bridge)
            self.ns_exec(r, "ip", "link", "set", bridge, "up")
        self.ns_exec(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if self.ipv6:
            self._setup_router6()

    def _setup_router6(self):
        r = self.router
        # nodad: the addresses are usable at once (no duplicate detection wait on a private bridge).
        self.ns_exec(r, "ip", "-6", "addr", "add", f"{EMU_IP6}/128", "dev", "lo", "nodad")
        self.ns_exec(r, "ip", "-6", "route", "add", "blackhole", SUPERNET6)
        for region, net in VPCS6.items():
            self.ns_exec(r, "ip", "-6", "addr", "add", f"{net}::1/64", "dev", VPCS[region][0], "nodad")
        self.ns_exec(r, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")

    def _start_emulator(self):
        for path, what in ((EMULATOR, "the emulator's command"), (PYTHON, "the emulator's venv")):
            if not os.access(path, os.X_OK):
                raise SystemExit(f"{what} {path} is missing; ./scripts/test creates it (it installs the emulator)")
        log = open(os.path.join(self.work, "awsemu.log"), "w")
        # Its own process group: pausing and killing it reaches the server process, whatever
        # the command runs it under.
        # IPv6 beds: [::] answers on EMU_IP (dual-stack) and EMU_IP6, inside the router namespace.
        host = "::" if self.ipv6 else EMU_IP
        self.emu = subprocess.Popen(["ip", "netns", "exec", self.router, EMULATOR, "-H", host, "-p", str(EMU_PORT)],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        probe = ("import sys,time,urllib.request\n"
                 "for _ in range(600):\n"
                 "    try: urllib.request.urlopen(sys.argv[1] + '/_fault', timeout=1); sys.exit(0)\n"
                 "    except OSError: time.sleep(0.1)\n"
                 "sys.exit('the emulator did not answer within 60 s')")
        r = self.ns_exec(self.router, sys.executable, "-c", probe, ENDPOINT, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{r.stderr.strip()}; its log ({log.name}):\n{self.emulator_log()[-3000:]}")

    def emulator_log(self):
        try:
            with open(os.path.join(self.work, "awsemu.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _signal_emulator(self, sig):
        try:
            os.killpg(self.emu.pid, sig)
        except ProcessLookupError:
            pass

    def teardown(self):
        for h in self.hosts.values():
            if h.get("proc") and h["proc"].poll() is None:
                h["proc"].kill()
        if self.emu:
            self._signal_emulator(signal.SIGCONT)
            self._signal_emulator(signal.SIGKILL)
        for ns in reversed(self.namespaces):
            pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", ns, check=False)
        self.namespaces = []

    # -- the emulator ----------------------------------------------------------------------------
    def world(self, cmd, spec):
        """tests/support/world.py's `cmd` (seed, run, stop, config, lifecycle, ...) against the bed's emulator."""
        r = self.ns_exec(self.router, PYTHON, os.path.join(ROOT, "tests", "support", "world.py"),
                         ENDPOINT, cmd, json.dumps(spec), check=False)
        if r.returncode != 0:
            raise RuntimeError(f"world.py {cmd} {json.dumps(spec)[:300]}: {r.stderr.strip()[-2000:]}")
        return json.loads(r.stdout)

    def emulator(self, method, path, body=None):
        """One call to the emulator's own test API (`/_fault`, `/_emu/...`), made from the router
        namespace, where it listens. Returns the decoded JSON answer (None when empty); an error
        answer raises with the emulator's message."""
        code = ("import sys,urllib.error,urllib.request\n"
                "r = urllib.request.Request(sys.argv[1] + sys.argv[3], data=(sys.stdin.read().encode() or None), method=sys.argv[2],\n"
                "                           headers={'Content-Type': 'application/json'})\n"
                "try: print(urllib.request.urlopen(r).read().decode())\n"
                "except urllib.error.HTTPError as e: sys.exit(f'HTTP {e.code}: {e.read().decode()}')")
        data = "" if body is None else json.dumps(body)
        r = self.ns_exec(self.router, sys.executable, "-c", code, ENDPOINT, method, path, input=data, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{method} {path} {data}: {r.stderr.strip()}")
        return json.loads(r.stdout) if r.stdout.strip() else None

    def faults(self, method="GET", entries=None):
        """The emulator's fault list: GET lists it (with hit counts), POST adds `entries`, DELETE clears."""
        return self.emulator(method, "/_fault", entries) or []

    def task_lifecycle(self, **config):
        """How the emulator's tasks stop and start: e.g. stop="hold" leaves a stopped task
        DEACTIVATING/STOPPING (desiredStatus STOPPED) until `advance_tasks` moves it on."""
        return self.world("config", config)

    def advance_tasks(self, region, arns, last_status):
        """Moves tasks on in their lifecycle, as ECS does when a stop timeout ends (e.g. to STOPPED)."""
        return self.world("lifecycle", {"region": region, "cluster": "web", "tasks": list(arns), "lastStatus": last_status})

    def describe_task(self, region, arn):
        """The task as DescribeTasks reports it: {"lastStatus", "desiredStatus", ...}."""
        code = ("import json,sys,boto3\n"
                "ecs = boto3.client('ecs', region_name=sys.argv[2], endpoint_url=sys.argv[1],\n"
                "                   aws_access_key_id='test', aws_secret_access_key='test')\n"
                "print(json.dumps(ecs.describe_tasks(cluster='web', tasks=[sys.argv[3]])['tasks'][0], default=str))")
        return json.loads(self.ns_exec(self.router, PYTHON, "-c", code, ENDPOINT, region, arn).stdout)

    def seed(self, tasks_per_region, others=None):
        """Service "api" tasks (the app) per region, plus `others`: {region: [task specs of other
        families]} sharing the cluster (they run no BEAM). Returns the app's tasks per region."""
        others = others or {}
        spec = {"ecs": [{"region": region, "cluster": "web", "subnet": f"{VPCS[region][1]}.0/24",
                         "tasks": [{"family": "api", "count": n, "group": "service:api"}] + others.get(region, [])}
                        for region, n in tasks_per_region.items()]}
        world = self.world("seed", spec)
        tasks = {region: [t for t in world["ecs"][f"{region}/web"]["running"] if t["family"] == "api"]
                 for region in tasks_per_region}
        for ts in tasks.values():
            self._remember(ts)
        return tasks

    def seed6(self, tasks_per_region):
        """IPv6-only service "api" tasks per region (a subnet with only an IPv6 CIDR). Returns
        them per region; each task's "ipv6" is its address, and its metadata endpoint is
        remembered at ENDPOINT6 (an IPv6-only task reaches the endpoint over IPv6)."""
        assert self.ipv6, "Bed(ipv6=True) has the IPv6 VPCs"
        spec = {"ecs": [{"region": region, "cluster": "web", "subnet": None, "subnet_ipv6": f"{VPCS6[region]}::/64",
                         "tasks": [{"family": "api", "count": n, "group": "service:api"}]}
                        for region, n in tasks_per_region.items()]}
        world = self.world("seed", spec)
        tasks = {region: world["ecs"][f"{region}/web"]["running"] for region in tasks_per_region}
        for ts in tasks.values():
            for t in ts:
                assert t["ipv6"] and not t["ip"], f"an IPv6-only task: {t}"
                self.metadata[t["ipv6"]] = t["metadata_uri"].replace(ENDPOINT, ENDPOINT6, 1)
        return tasks

    def run_task(self, region):
        tasks = self.world("run", {"region": region, "cluster": "web", "subnet": f"{VPCS[region][1]}.0/24",
                                   "family": "api", "count": 1, "group": "service:api"})
        self._remember(tasks)
        return tasks[0]

    def _remember(self, tasks):
        for t in tasks:
            if t.get("metadata_uri"):
                self.metadata[t["ip"]] = t["metadata_uri"]

    def stop_task(self, region, arn):
        self.world("stop", {"region": region, "cluster": "web", "tasks": [arn]})

    def calls(self, since=0.0):
        """The emulator's own log of AWS calls since `since` (unix seconds, the emulator's clock:
        this machine's): ([(t, client ip, operation, region)], the emulator's time now). Every
        node has its own address, so this is each node's calls as AWS would count them."""
        out = self.emulator("GET", f"/_emu/calls?since={since}")
        return [tuple(c) for c in out["calls"]], out["now"]

    def calls_per_client(self, since, until=None):
        """{(client ip, region): ECS/Cloud Map calls} in [since, until) from the emulator's log."""
        counts = {}
        for t, client, _op, region in self.calls(since)[0]:
            if until is None or t < until:
                counts[(client, region)] = counts.get((client, region), 0) + 1
        return counts

    def partition(self, a="eu-west-2", b="us-west-2"):
        """Cuts the "VPC peering" between two regions: the router drops everything forwarded
        between their bridges (iptables in the router namespace, whose netfilter state is its own).
        Both sides still reach the emulator (the router itself), as each region still reaches its
        own AWS endpoint in a real partition. Established TCP connections (Erlang distribution)
        stall rather than reset: a node learns of it only from net_ticktime."""
        for x, y in ((a, b), (b, a)):
            self.ns_exec(self.router, "iptables", "-w", "-I", "FORWARD", "-i", VPCS[x][0], "-o", VPCS[y][0],
                         "-j", "DROP")

    def heal(self, a="eu-west-2", b="us-west-2"):
        """Undoes `partition`."""
        for x, y in ((a, b), (b, a)):
            self.ns_exec(self.router, "iptables", "-w", "-D", "FORWARD", "-i", VPCS[x][0], "-o", VPCS[y][0],
                         "-j", "DROP")

    def rss_kib(self):
        """{"beam": KiB, "emulator": KiB}: resident memory of every BEAM of the bed (summed over
        the task namespaces) and of the emulator, from /proc/<pid>/status VmRSS."""
        def rss(pid):
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            return int(line.split()[1])
            except OSError:
                pass
            return 0

        def comm(pid):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    return f.read().strip()
            except OSError:
                return ""

        out = {"beam": 0, "emulator": 0, "beams": 0}
        for ns in self.namespaces:
            for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
                if ns == self.router:
                    out["emulator"] += rss(pid)
                elif comm(pid).startswith("beam"):
                    out["beam"] += rss(pid)
                    out["beams"] += 1
        return out

    def pause_emulator(self):
        self._signal_emulator(signal.SIGSTOP)

    def resume_emulator(self):
        self._signal_emulator(signal.SIGCONT)

    # -- task hosts ------------------------------------------------------------------------------
    def add_host(self, region, ip):
        """A namespace for one task, wired into its region's VPC bridge."""
        assert ip.startswith(VPCS[region][1] + "."), f"{ip} is not in {region}'s test subnet"
        self._n += 1
        ns = f"{self.prefix}h{self._n}"
        self._add_ns(ns)
        bridge, net = VPCS[region]
        veth = f"{self.prefix}v{self._n}"
        run("ip", "link", "add", veth, "netns", self.router, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.ns_exec(self.router, "ip", "link", "set", veth, "master", bridge)
        self.ns_exec(self.router, "ip", "link", "set", veth, "up")
        self.ns_exec(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        self.ns_exec(ns, "ip", "link", "set", "eth0", "up")
        self.ns_exec(ns, "ip", "route", "add", SUPERNET, "via", f"{net}.1")
        self.hosts[ip] = {"ns": ns, "region": region}
        return ns

    def add_host6(self, region, ip6):
        """A namespace for one IPv6-only task: eth0 with only `ip6`, wired into its region's
        bridge, one route (to the bed's IPv6 prefix) and no default route."""
        assert ip6.startswith(VPCS6[region] + ":"), f"{ip6} is not in {region}'s IPv6 test subnet"
        self._n += 1
        ns = f"{self.prefix}h{self._n}"
        self._add_ns(ns)
        veth = f"{self.prefix}v{self._n}"
        run("ip", "link", "add", veth, "netns", self.router, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.ns_exec(self.router, "ip", "link", "set", veth, "master", VPCS[region][0])
        self.ns_exec(self.router, "ip", "link", "set", veth, "up")
        # The link first: an IPv6 address added while it is down may be dropped when it comes up.
        self.ns_exec(ns, "sysctl", "-qw", "net.ipv6.conf.eth0.keep_addr_on_down=1")
        self.ns_exec(ns, "ip", "link", "set", "eth0", "up")
        self.ns_exec(ns, "ip", "-6", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        self.ns_exec(ns, "ip", "-6", "route", "add", SUPERNET6, "via", f"{VPCS6[region]}::1")
        self.hosts[ip6] = {"ns": ns, "region": region}
        return ns

    def add_doctor_host(self, ip="10.201.0.250"):
        """A host in eu-west-2 to run `ecs-peers doctor` from (like exec'ing into a task). Its
        routes model the VPC's route table: the emulator, its own subnet, and the peering route
        to us-west-2 (which a test may delete)."""
        ns = self.add_host("eu-west-2", ip)
        self.ns_exec(ns, "ip", "route", "del", SUPERNET)
        self.ns_exec(ns, "ip", "route", "add", "10.200.0.0/24", "via", "10.201.0.1")
        self.ns_exec(ns, "ip", "route", "add", "10.202.0.0/24", "via", "10.201.0.1")
        self.ns_exec(ns, "ip", "route", "add", "10.203.0.0/24", "via", "10.201.0.1")
        return ns

    def start_node(self, ip, basename="app", cookie=None, node_names=None, sources=None, metadata_uri=None,
                   endpoint=ENDPOINT, proto_dist=None, share_polling=None, erl_flags="", env=None, tree=None):
        """`sources`: the strategy's sources as Elixir source text (node.exs has a default).
        `share_polling`: True/False sets the strategy's `share_polling` (fleet-shared polling);
        None leaves the key out (the default, on) unless E2E_SHARE_POLLING is set.
        The node's ECS_CONTAINER_METADATA_URI_V4 is its task's metadata endpoint, as the ECS agent
        sets it in every container, unless `metadata_uri` says otherwise ("" leaves it unset).
        `erl_flags`: more flags for erl (no spaces inside one flag); `env`: more environment.
        `tree`: another working tree (another revision's) whose Elixir package and node.exs the
        node runs (`tree_paths`); None: this one."""
        h, env_extra = self.hosts[ip], env or {}
        h["status"] = os.path.join(self.work, f"{ip}.json")
        h["log"] = os.path.join(self.work, f"{ip}.log")
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                   AWS_EC2_METADATA_DISABLED="true", HOME=self.work, E2E_NODE_NAMES=node_names or "",
                   E2E_SOURCES=sources or "")
        env.pop("ECS_CONTAINER_METADATA_URI_V4", None)
        if share_polling is not None:
            env["E2E_SHARE_POLLING"] = "1" if share_polling else "0"
        if getattr(self, "probe_ms", None):
            env["E2E_PROBE_MS"] = str(self.probe_ms)
        uri = self.metadata.get(ip) if metadata_uri is None else metadata_uri
        if uri:
            env["ECS_CONTAINER_METADATA_URI_V4"] = uri
        # proto_dist="inet6_tcp": Erlang distribution over IPv6 (an IPv6-only task's nodes).
        erl = "-kernel inet_dist_listen_min 9100 inet_dist_listen_max 9110"
        if proto_dist:
            erl += f" -proto_dist {proto_dist}"
        if erl_flags:
            erl += f" {erl_flags}"
        env.update(env_extra)
        h["proc"] = subprocess.Popen(
            ["ip", "netns", "exec", h["ns"], "elixir", "--name", f"{basename}@{ip}", "--cookie", cookie or COOKIE,
             "--erl", erl,
             "-pa", *tree_paths(tree), h["status"], endpoint, str(self.interval_ms)],
            stdout=open(h["log"], "w"), stderr=subprocess.STDOUT, env=env)

    def terminate_node(self, ip, timeout=30):
        """SIGTERM, as ECS sends when it stops a task: the BEAM shuts down gracefully (init:stop)."""
        h = self.hosts[ip]
        h["proc"].terminate()
        try:
            h["proc"].wait(timeout)
        except subprocess.TimeoutExpired:
            h["proc"].kill()
            h["proc"].wait()

    def kill_node(self, ip):
        h = self.hosts[ip]
        h["proc"].kill()
        h["proc"].wait()
        # The BEAM is gone, its status file must not be read as alive.
        try:
            os.remove(h["status"])
        except FileNotFoundError:
            pass

    def metadata_uri(self, ip):
        """The task metadata endpoint of the task at `ip`, as the emulator reported it."""
        if ip not in self.metadata:
            raise AssertionError(f"the emulator reported no metadata_uri for the task at {ip} (world.py run/seed output)")
        return self.metadata[ip]

    def status(self, ip):
        try:
            with open(self.hosts[ip]["status"]) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def fresh_status(self, ip, timeout=10):
        """The node's status with its strategy's own peers (`known`) from a status call begun
        after this call began (`known_at`, OS time in ms; a file written before could not hold it)."""
        since = time.time() * 1000

        def fresh():
            s = self.status(ip)
            return s if s and (s.get("known_at") or 0) >= since else None

        return wait_until(fresh, timeout, f"{node(ip)} to write a status read after {since:.0f}", step=0.02)

    def log(self, ip):
        try:
            with open(self.hosts[ip]["log"]) as f:
                return f.read()
        except (FileNotFoundError, KeyError):
            return ""


def node(ip, basename="app"):
    return f"{basename}@{ip}"


def global_cuts(bed):
    """Every line in which OTP global cut a link (prevent_overlapping_partitions), from every
    node's log, as (ip of the node that logged it, line)."""
    return [(ip, line) for ip in bed.hosts for line in bed.log(ip).splitlines()
            if "'global'" in line and "prevent overlapping partitions" in line]


def cuts_a_link_of(cut, ip):
    """Whether a cut from `global_cuts` is of a link of the node at `ip`: logged by that node, or
    naming it (`... disconnect from node :"app@<ip>"`)."""
    at, line = cut
    return at == ip or f'"{node(ip)}"' in line


def sees(bed, ip, others):
    """The node at `ip` is connected to exactly the nodes at `others`."""
    s = bed.status(ip)
    return s is not None and set(s["nodes"]) == {node(o) for o in others}


def fully_meshed(bed, ips):
    return all(sees(bed, ip, [o for o in ips if o != ip]) for ip in ips)


def knows(bed, ip, others):
    """The strategy at `ip` has found every node at `others` in its own last poll (its status's
    `known`). Being connected is not that: a new node dials the others, so it shows in their
    Node.list before their polls list its task."""
    s = bed.status(ip)
    return s is not None and {node(o) for o in others} <= set(s.get("known") or [])


def joined(bed, ips):
    """Every node at `ips` is connected to every other and has found every other in its own poll:
    from here on each of them treats the others as peers (drains them, drops them when they stop)."""
    return fully_meshed(bed, ips) and all(knows(bed, ip, [o for o in ips if o != ip]) for ip in ips)


def wait_until(pred, timeout, what, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def require_root_and_netns():
    """Network namespaces need root and iproute2; say so plainly instead of pretending."""
    if os.geteuid() != 0:
        sys.exit("the end-to-end test bed needs root (network namespaces); run it as root")
    probe = "ep-probe-" + secrets.token_hex(2)
    r = run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        sys.exit(f"network namespaces are unavailable here ({r.stderr.strip()}); the end-to-end test needs them")
    run("ip", "netns", "del", probe, check=False)


# -- ECS on EC2, and the EPMD-less distribution bridge ---------------------------------------------
DIST_PORT = 4370  # ECS_PEERS_DIST_PORT's default: the one port every node listens on
DOCKER_NET = "172.17.0"  # each instance's own bridge network, as Docker's default bridge


class Ec2Bed(Bed):
    """The same two VPCs, with ECS on EC2 as well as awsvpc tasks, for BEAM nodes that run the
    EPMD-less distribution bridge (`-start_epmd false -epmd_module Elixir.EcsPeers.Epmd`).

        instance namespace  <P>iN   an "EC2 instance": eth0 with the instance's private IP on its
                                    region's VPC bridge; IP forwarding on (in it only); a bridge
                                    `docker0` (172.17.0.1/24, as Docker's) for its bridge-mode
                                    containers; iptables nat: a DNAT rule per port mapping
                                    (PREROUTING and OUTPUT, from the instance IP and the host port
                                    the emulator assigned to the container's port, as Docker's
                                    bridge driver writes them), and MASQUERADE for what the
                                    containers send out (and for a container dialling a
                                    neighbour through the instance address: the hairpin).
                                    A host-mode task's BEAM runs in the instance namespace itself.
        container namespace <P>cN   one bridge-mode container: eth0 172.17.0.x on its instance's
                                    docker0, one route to the test supernet via the instance (no
                                    default route).

    Safety is the base bed's: everything lives in namespaces with the run's prefix (iptables
    rules too: netfilter state is per namespace, the root namespace's is never touched), no
    default routes, the supernet black-holed in the router, everything deleted at teardown.
    """

    def __init__(self, interval_ms=1000):
        super().__init__(interval_ms)
        self.instances = {}  # instance ip -> {"ns", "region", "containers": n}
        self.beams = {}  # key (task id) -> {"ns", "proc", "status", "log", "name"}

    # -- the network ----------------------------------------------------------------------------
    def add_instance(self, region, ip):
        """An EC2 instance's namespace, on its region's VPC, ready for bridge-mode containers."""
        ns = self.add_host(region, ip)
        ipt = ("iptables", "-w")
        self.ns_exec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ns_exec(ns, "ip", "link", "add", "docker0", "type", "bridge")
        self.ns_exec(ns, "ip", "addr", "add", f"{DOCKER_NET}.1/24", "dev", "docker0")
        self.ns_exec(ns, "ip", "link", "set", "docker0", "up")
        # What containers send out leaves with the instance's address (Docker's MASQUERADE), and
        # a container reaching a neighbour through the instance address (the hairpin) is
        # answered through the instance too.
        self.ns_exec(ns, *ipt, "-t", "nat", "-A", "POSTROUTING", "-s", f"{DOCKER_NET}.0/24", "!", "-o", "docker0",
                     "-j", "MASQUERADE")
        self.ns_exec(ns, *ipt, "-t", "nat", "-A", "POSTROUTING", "-s", f"{DOCKER_NET}.0/24",
                     "-d", f"{DOCKER_NET}.0/24", "-o", "docker0", "-j", "MASQUERADE")
        self.instances[ip] = {"ns": ns, "region": region, "containers": 0}
        return ns

    def add_container(self, instance_ip, port_map):
        """A bridge-mode container on the instance: its namespace behind the instance's docker0,
        and a DNAT rule for each {host port: container port} of `port_map` (the task's
        networkBindings as ECS reported them). Returns (namespace, container address)."""
        inst = self.instances[instance_ip]
        inst["containers"] += 1
        self._n += 1
        ns = f"{self.prefix}c{self._n}"
        self._add_ns(ns)
        addr = f"{DOCKER_NET}.{1 + inst['containers']}"
        veth = f"{self.prefix}d{self._n}"
        run("ip", "link", "add", veth, "netns", inst["ns"], "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.ns_exec(inst["ns"], "ip", "link", "set", veth, "master", "docker0")
        # Hairpin, as Docker sets it: a container may reach itself through a mapped port.
        self.ns_exec(inst["ns"], "ip", "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
        self.ns_exec(inst["ns"], "ip", "link", "set", veth, "up")
        self.ns_exec(ns, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
        self.ns_exec(ns, "ip", "link", "set", "eth0", "up")
        self.ns_exec(ns, "ip", "route", "add", SUPERNET, "via", f"{DOCKER_NET}.1")
        for host_port, container_port in port_map.items():
            for chain in ("PREROUTING", "OUTPUT"):
                self.ns_exec(inst["ns"], "iptables", "-w", "-t", "nat", "-A", chain, "-d", instance_ip, "-p", "tcp",
                             "--dport", str(host_port), "-j", "DNAT", "--to-destination", f"{addr}:{container_port}")
        return ns, addr

    def only_port_open(self, ns, port=DIST_PORT):
        """The namespace accepts new inbound TCP connections on `port` only (answers to its own
        connections and loopback still pass): the one security-group rule of the EPMD-less setup."""
        for rule in (("-i", "lo", "-j", "ACCEPT"),
                     ("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"),
                     ("-p", "tcp", "--dport", str(port), "-j", "ACCEPT")):
            self.ns_exec(ns, "iptables", "-w", "-A", "INPUT", *rule)
        self.ns_exec(ns, "iptables", "-w", "-P", "INPUT", "DROP")

    # -- the emulator ---------------------------------------------------------------------------
    def register_instances(self, region, cluster, ips):
        """EC2 instances with these private IPs, registered as the cluster's container instances."""
        subnet = f"{VPCS[region][1]}.0/24"
        return self.world("instances", {"region": region, "cluster": cluster, "subnet": subnet,
                                        "instances": [{"ipv4": ip} for ip in ips]})

    def start_ec2_task(self, region, container_instance, family, network_mode, port_mappings, cluster="web",
                       group="service:api"):
        """One task started on the named container instance (StartTask); world.py's output."""
        return self.world("run", {"region": region, "cluster": cluster, "subnet": None, "family": family,
                                  "count": 1, "group": group, "launch_type": "EC2",
                                  "network_mode": network_mode, "container_instance": container_instance,
                                  "port_mappings": port_mappings})[0]

    # -- BEAM nodes over the EPMD-less bridge -----------------------------------------------------
    def start_epmdless_node(self, key, ns, name, sources=None, metadata_uri=None, extra_env=None, erl_flags=""):
        """A BEAM in `ns` named `name`, with no EPMD: `-start_epmd false -epmd_module
        Elixir.EcsPeers.Epmd`, listening on ECS_PEERS_DIST_PORT; clustered by EcsPeers.Strategy
        (tests/e2e/node.exs). `key` names it in `beams` (the task id). `erl_flags`: more erl flags."""
        b = {"ns": ns, "name": name, "status": os.path.join(self.work, f"{key}.json"),
             "log": os.path.join(self.work, f"{key}.log")}
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                   AWS_EC2_METADATA_DISABLED="true", HOME=self.work, E2E_NODE_NAMES="", E2E_SOURCES=sources or "",
                   ECS_PEERS_DIST_PORT=str(DIST_PORT), **(extra_env or {}))
        env.pop("ECS_CONTAINER_METADATA_URI_V4", None)
        env.pop("ECS_PEERS_STATIC_PEERS", None)
        if metadata_uri:
            env["ECS_CONTAINER_METADATA_URI_V4"] = metadata_uri
        b["proc"] = subprocess.Popen(
            ["ip", "netns", "exec", ns, "elixir", "--name", name, "--cookie", COOKIE,
             "--erl", f"-start_epmd false -epmd_module Elixir.EcsPeers.Epmd -pa {EBIN} {erl_flags}".rstrip(),
             "-pa", EBIN, os.path.join(ROOT, "tests", "e2e", "node.exs"),
             b["status"], ENDPOINT, str(self.interval_ms)],
            stdout=open(b["log"], "w"), stderr=subprocess.STDOUT, env=env)
        self.beams[key] = b
        return b

    def beam_status(self, key):
        try:
            with open(self.beams[key]["status"]) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def beam_log(self, key):
        try:
            with open(self.beams[key]["log"]) as f:
                return f.read()
        except (FileNotFoundError, KeyError):
            return ""

    def beam_sees(self, key, names):
        """The BEAM `key` is connected to exactly the nodes `names`."""
        s = self.beam_status(key)
        return s is not None and set(s["nodes"]) == set(names)

    def beam_knows(self, key, names):
        """The strategy of BEAM `key` has found every node in `names` in its own last poll (as
        `knows()` for the hosts' nodes)."""
        s = self.beam_status(key)
        return s is not None and set(names) <= set(s.get("known") or [])

    def processes(self):
        """{namespace: [command names of its processes]} for every namespace of the bed."""
        out = {}
        for ns in self.namespaces:
            comms = []
            for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        comms.append(f.read().strip())
                except OSError:
                    pass
            out[ns] = comms
        return out

    def listening(self, ns):
        """The TCP ports something listens on in `ns` (ss -ltn)."""
        ports = set()
        for line in self.ns_exec(ns, "ss", "-Hltn").stdout.splitlines():
            local = line.split()[3]
            ports.add(int(local.rsplit(":", 1)[1]))
        return ports

    def teardown(self):
        for b in getattr(self, "beams", {}).values():
            if b.get("proc") and b["proc"].poll() is None:
                b["proc"].kill()
        super().teardown()


def task_id(arn):
    """The task id: the last part of the task ARN (what a node reads from its task metadata)."""
    return arn.rsplit("/", 1)[-1]


def tree_paths(tree=None):
    """(the ebin of the Elixir package built in `tree`'s elixir/ by `mix compile` in the test
    env, `tree`'s tests/e2e/node.exs): what a node of that working tree runs (None: this one)."""
    if tree is None:
        return EBIN, os.path.join(ROOT, "tests", "e2e", "node.exs")
    return (os.path.join(tree, "elixir", "_build", "test", "lib", "ecs_peers", "ebin"),
            os.path.join(tree, "tests", "e2e", "node.exs"))
# A process that crashed, as OTP's logger reports it: a Task, a GenServer, a spawned process.
CRASH_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d\d\d) \[error\] (?:Task #PID<[\d.]+> started from .* terminating"
                        r"|GenServer .* terminating|Process #PID<[\d.]+> raised an exception)")


def crashed_processes(bed):
    """{node name: [the first 200 characters of each crash line]} of every node of the bed whose
    log has one (`CRASH_LINE`): a crashed helper process (a diagnosis task) does not restart the
    strategy or stop the BEAM, so only its node's log tells."""
    out = {}
    for ip in bed.hosts:
        lines = [line[:200] for line in bed.log(ip).splitlines() if CRASH_LINE.match(line)]
        if lines:
            out[node(ip)] = lines
    return out
