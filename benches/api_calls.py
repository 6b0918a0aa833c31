"""Prints the AWS API calls ecs-peers makes per poll: first poll, steady state, and a poll after
churn (10 tasks stopped, 10 started); and, for an ECS-on-EC2 cluster in bridge mode, first poll,
steady state, and a poll after one new instance joins with a task. The counts come from the SDK
interceptor inside the binary (`api_calls_by_action` in each snapshot), not from arithmetic.

Run: benches/api_calls.sh [fargate|ec2|all]   (builds the release binary and installs awsemu's
venv if needed; ECS_PEERS_BIN=target/debug/ecs-peers uses a debug build: the counts are the same)
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AWSEMU_RUN = os.path.join(ROOT, "tests", "awsemu", "run")  # the emulator's one start command
BIN = os.environ.get("ECS_PEERS_BIN", os.path.join(ROOT, "target", "release", "ecs-peers"))
EU_TASKS, US_TASKS, INSTANCES = 1000, 250, 20
EC2_INSTANCES, EC2_TASKS = 10, 200


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def world(endpoint, cmd, spec):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "support", "world.py"), endpoint, cmd],
                         input=json.dumps(spec), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def start_emu():
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    emu = subprocess.Popen([AWSEMU_RUN, "-H", "127.0.0.1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return emu, endpoint


def ec2():
    """ECS on EC2, bridge mode: EC2_TASKS tasks on EC2_INSTANCES container instances."""
    emu, endpoint = start_emu()
    bridge = {"launch_type": "EC2", "network_mode": "bridge", "group": "service:api",
              "port_mappings": [{"containerPort": 4370, "hostPort": 0}]}
    try:
        world(endpoint, "seed", {"ecs": [
            {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
             "instances": [{"ipv4": f"10.201.0.{i + 10}"} for i in range(EC2_INSTANCES)],
             "tasks": [dict(bridge, family="api", count=EC2_TASKS)]}]})
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_EC2_METADATA_DISABLED="true")
        watch = subprocess.Popen(
            [BIN, "watch", "--json", "--every-poll", "--count", "4", "--interval", "3s", "--max-attempts", "1",
             "--basename", "app", "--endpoint-url", endpoint, "--ecs", "eu-west-2/web/api"],
            stdout=subprocess.PIPE, text=True, env=env)
        rows = []
        polls = 0
        for line in watch.stdout:
            ev = json.loads(line)
            if ev["event"] != "snapshot":
                continue
            polls += 1
            label = {1: "first", 2: "steady", 3: "new instance", 4: "steady"}[polls]
            for s in ev["snapshot"]["sources"]:
                rows.append((polls, label, s["api_calls_by_action"], s["peers"], s["skipped_tasks"], s["ok"]))
            if polls == 2:
                new = world(endpoint, "instances", {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
                                                    "instances": [{"ipv4": "10.201.0.200"}]})
                world(endpoint, "run", dict(bridge, region="eu-west-2", cluster="web", subnet="10.201.0.0/24",
                                            family="api", count=1, container_instance=new[0]["container_instance"]))
        watch.wait()
    finally:
        emu.kill()
        emu.wait()
    print(f"ECS on EC2, bridge mode: AWS API calls per poll ({EC2_TASKS} tasks on {EC2_INSTANCES} container "
          f"instances in eu-west-2)")
    print(f"{'poll':<4}  {'kind':<12}  {'ListTasks':>9}  {'DescribeTasks':>13}  {'DescribeContainerInstances':>26}  "
          f"{'ec2:DescribeInstances':>21}  {'peers':>5}  {'skipped':>7}")
    for n, label, calls, peers, skipped, ok in rows:
        def c(k):
            return str(calls.get(k, 0))
        print(f"{n:<4}  {label:<12}  {c('ecs:ListTasks'):>9}  {c('ecs:DescribeTasks'):>13}  "
              f"{c('ecs:DescribeContainerInstances'):>26}  {c('ec2:DescribeInstances'):>21}  {peers:>5}  "
              f"{skipped:>7}{'' if ok else '  FAILING'}")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what not in ("fargate", "ec2", "all"):
        sys.exit(f"api_calls.py: {what!r} is not fargate, ec2 or all")
    if what in ("fargate", "all"):
        fargate()
    if what in ("ec2", "all"):
        if what == "all":
            print()
        ec2()


def fargate():
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    emu = subprocess.Popen([AWSEMU_RUN, "-H", "127.0.0.1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        w = world(endpoint, "seed", {
            "ecs": [
                {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/22",
                 "tasks": [{"family": "api", "count": EU_TASKS, "group": "service:api"}]},
                {"region": "us-west-2", "cluster": "web", "subnet": "10.202.0.0/24",
                 "tasks": [{"family": "api", "count": US_TASKS, "group": "service:api"}]}],
            "cloudmap": [{"region": "ap-southeast-2", "namespace": "internal", "service": "api",
                          "instances": [{"id": f"i{i}", "ipv4": f"10.203.0.{i + 10}"} for i in range(INSTANCES)]}]})
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_EC2_METADATA_DISABLED="true")
        watch = subprocess.Popen(
            [BIN, "watch", "--json", "--every-poll", "--count", "4", "--interval", "3s", "--max-attempts", "1",
             "--basename", "app", "--endpoint-url", endpoint,
             "--ecs", "eu-west-2/web/api", "--ecs", "us-west-2/web/api", "--cloudmap", "ap-southeast-2/internal/api"],
            stdout=subprocess.PIPE, text=True, env=env)
        rows = []
        polls = 0
        for line in watch.stdout:
            ev = json.loads(line)
            if ev["event"] != "snapshot":
                continue
            polls += 1
            label = {1: "first", 2: "steady", 3: "churn", 4: "steady"}[polls]
            for s in ev["snapshot"]["sources"]:
                rows.append((polls, label, s["id"], s["api_calls_by_action"], s["peers"], s["ok"]))
            if polls == 2:
                # Churn before poll 3: 10 tasks stop, 10 start.
                eu = w["ecs"]["eu-west-2/web"]["running"]
                world(endpoint, "stop", {"region": "eu-west-2", "cluster": "web", "tasks": [t["arn"] for t in eu[:10]]})
                world(endpoint, "run", {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/22",
                                        "family": "api", "count": 10, "group": "service:api"})
        watch.wait()
    finally:
        emu.kill()
        emu.wait()

    print(f"AWS API calls per poll ({EU_TASKS} tasks in eu-west-2, {US_TASKS} in us-west-2, "
          f"{INSTANCES} Cloud Map instances in ap-southeast-2)")
    print(f"{'poll':<4}  {'kind':<6}  {'source':<36}  {'ListTasks':>9}  {'DescribeTasks':>13}  "
          f"{'DiscoverInstances':>17}  {'peers':>5}")
    for n, label, sid, calls, peers, ok in rows:
        def c(k):
            return str(calls.get(k, 0))
        print(f"{n:<4}  {label:<6}  {sid:<36}  {c('ecs:ListTasks'):>9}  {c('ecs:DescribeTasks'):>13}  "
              f"{c('servicediscovery:DiscoverInstances'):>17}  {peers:>5}{'' if ok else '  FAILING'}")
    total = {}
    for n, _, _, calls, _, _ in rows:
        total[n] = total.get(n, 0) + sum(calls.values())
    print("total calls per poll: " + ", ".join(f"poll {n}: {v}" for n, v in sorted(total.items())))


if __name__ == "__main__":
    main()
