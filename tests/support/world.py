"""Builds and changes a test world in awsemu (moto) through the real AWS APIs (boto3).

Usage (JSON in on stdin, or as the third argument; JSON out on stdout):
  world.py ENDPOINT seed     {"ecs": [CLUSTER...], "cloudmap": [SERVICE...]}
  world.py ENDPOINT run      {"region", "cluster", "subnet", "family", "count", "group"?}
  world.py ENDPOINT stop     {"region", "cluster", "tasks": [ARN...]}

CLUSTER  = {"region", "cluster", "subnet": "10.201.0.0/24",
            "tasks": [{"family", "count", "group"?: "service:api"}], "stop"?: {"family", "count"}}
SERVICE  = {"region", "namespace", "service", "instances": [{"id", "ipv4"?, "ipv6"?, "attributes"?}]}

Output of seed: {"ecs": {"REGION/CLUSTER": {"running": [{"arn","ip","family"}], "stopped": [...]}},
                 "cloudmap": {"REGION/NAMESPACE/SERVICE": [{"id","ip"}]}}
With WORLD_OUTPUT=erlang the output is an Erlang term (maps with binary keys) followed by a dot,
for tests on OTP versions without a JSON module.
Only the emulator at ENDPOINT (loopback) is contacted.
"""
import json
import os
import sys

import boto3
from botocore.config import Config

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
# The Cloud Map data plane would otherwise go to data-127.0.0.1, which does not resolve.
os.environ["AWS_DISABLE_HOST_PREFIX_INJECTION"] = "true"

ENDPOINT = sys.argv[1]
# Only a loopback emulator, or one inside the end-to-end test bed's own namespace (10.200.0.1).
assert ENDPOINT.startswith(("http://127.0.0.1:", "http://10.200.0.1:")), "world.py only talks to a local emulator"
CFG = Config(retries={"max_attempts": 1}, inject_host_prefix=False)


def client(service, region):
    return boto3.client(service, region_name=region, endpoint_url=ENDPOINT, config=CFG)


_subnets = {}


def subnet(region, cidr):
    key = (region, cidr)
    if key not in _subnets:
        ec2 = client("ec2", region)
        vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        _subnets[key] = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr)["Subnet"]["SubnetId"]
    return _subnets[key]


_families = set()


def run_tasks(region, cluster, cidr, family, count, group=None, container="app"):
    ecs = client("ecs", region)
    if (region, family) not in _families:
        ecs.register_task_definition(
            family=family, networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
            cpu="256", memory="512",
            containerDefinitions=[{"name": container, "image": container, "memory": 128}])
        _families.add((region, family))
    sub = subnet(region, cidr)
    out = []
    while count > 0:
        n = min(count, 10)
        kwargs = dict(cluster=cluster, taskDefinition=family, launchType="FARGATE", count=n,
                      networkConfiguration={"awsvpcConfiguration": {
                          "subnets": [sub], "securityGroups": [], "assignPublicIp": "DISABLED"}})
        if group:
            kwargs["group"] = group
        for t in ecs.run_task(**kwargs)["tasks"]:
            ip = next(d["value"] for a in t["attachments"] for d in a["details"]
                      if d["name"] == "privateIPv4Address")
            out.append({"arn": t["taskArn"], "ip": ip, "family": family})
        count -= n
    return out


def seed(spec):
    world = {"ecs": {}, "cloudmap": {}}
    for c in spec.get("ecs", []):
        region, name = c["region"], c["cluster"]
        client("ecs", region).create_cluster(clusterName=name)
        running = []
        for t in c.get("tasks", []):
            running += run_tasks(region, name, c["subnet"], t["family"], t["count"], t.get("group"),
                                 t.get("container", "app"))
        stopped = []
        stop = c.get("stop")
        if stop:
            victims = [t for t in running if t["family"] == stop["family"]][: stop["count"]]
            stop_tasks(region, name, [v["arn"] for v in victims])
            stopped = victims
            running = [t for t in running if t not in victims]
        world["ecs"][f"{region}/{name}"] = {"running": running, "stopped": stopped}
    for s in spec.get("cloudmap", []):
        sd = client("servicediscovery", s["region"])
        op = sd.create_http_namespace(Name=s["namespace"])["OperationId"]
        ns_id = sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]
        svc = sd.create_service(Name=s["service"], NamespaceId=ns_id)["Service"]["Id"]
        insts = []
        for i in s.get("instances", []):
            attrs = dict(i.get("attributes", {}))
            if "ipv4" in i:
                attrs["AWS_INSTANCE_IPV4"] = i["ipv4"]
            if "ipv6" in i:
                attrs["AWS_INSTANCE_IPV6"] = i["ipv6"]
            sd.register_instance(ServiceId=svc, InstanceId=i["id"], Attributes=attrs)
            insts.append({"id": i["id"], "ip": i.get("ipv4") or i.get("ipv6")})
        world["cloudmap"][f"{s['region']}/{s['namespace']}/{s['service']}"] = insts
    return world


def stop_tasks(region, cluster, arns):
    ecs = client("ecs", region)
    for arn in arns:
        ecs.stop_task(cluster=cluster, task=arn, reason="test")
    return {"stopped": arns}


def erlang_term(v):
    if isinstance(v, dict):
        return "#{" + ",".join(f"{erlang_term(str(k))} => {erlang_term(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(erlang_term(x) for x in v) + "]"
    if isinstance(v, str):
        assert v.isascii(), "world terms are ASCII"
        return '<<"' + v.replace("\\", "\\\\").replace('"', '\\"') + '">>'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "nil"
    return str(v)


if __name__ == "__main__":
    cmd = sys.argv[2]
    spec = json.loads(sys.argv[3]) if len(sys.argv) > 3 else json.load(sys.stdin)
    if cmd == "seed":
        result = seed(spec)
    elif cmd == "run":
        result = run_tasks(spec["region"], spec["cluster"], spec["subnet"], spec["family"],
                           spec["count"], spec.get("group"))
    elif cmd == "stop":
        result = stop_tasks(spec["region"], spec["cluster"], spec["tasks"])
    else:
        sys.exit(f"unknown command {cmd}")
    if os.environ.get("WORLD_OUTPUT") == "erlang":
        sys.stdout.write(erlang_term(result) + ".")
    else:
        json.dump(result, sys.stdout)
