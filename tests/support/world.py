"""Builds and changes a test world in awsemu (tests/awsemu) through the real AWS APIs (boto3), and
through the emulator's control endpoints for what AWS has no API for (task state, task health).

Usage (JSON in on stdin, or as the third argument; JSON out on stdout):
  world.py ENDPOINT seed       {"ecs": [CLUSTER...], "cloudmap": [SERVICE...]}
  world.py ENDPOINT run        RUN
  world.py ENDPOINT stop       {"region", "cluster", "tasks": [ARN...]}
  world.py ENDPOINT instances  {"region", "cluster", "subnet", "subnet_ipv6"?,
                                "instances": [{"ipv4", "ipv6"?} | {"external": true}]}
  world.py ENDPOINT regions    {"region", "opt_status": "DISABLED"|"ENABLED"|...}
  world.py ENDPOINT lifecycle  {"region", "cluster", "tasks": [ARN...], "lastStatus"}
  world.py ENDPOINT health     {"region", "cluster", "tasks": [ARN...], "healthStatus"}
  world.py ENDPOINT config     {"stop": "immediate"|"hold", "stop_hold_s"?, "start": "immediate"|"hold"}
  world.py ENDPOINT tag        {"region", "task": ARN, "tags"?: {K: V}, "untag"?: [K...]}
                               (TagResource, then UntagResource; out: the task's tags {K: V})

RUN      = {"region", "cluster", "subnet": "10.201.0.0/24" | null, "family", "count", "group"?,
            "subnet_ipv6"?: "fd00:201::/64" (dual-stack; with "subnet": null IPv6-only),
            "launch_type"?: "FARGATE" (default) | "EC2" | "EXTERNAL" (ECS Anywhere), "network_mode"?: "awsvpc" (default) |
            "bridge" | "host", "container_instance"?: ARN (EC2: start the tasks there),
            "port_mappings"?: [{"containerPort", "hostPort"?}] (bridge: hostPort 0 or absent =
            dynamic), "revision"?: N (run FAMILY:N), "new_revision"?: true, "tags"?: {K: V},
            "health"?: "HEALTHY"|"UNHEALTHY"|"UNKNOWN", "service_connect"?: true,
            "container"?: "app"}
CLUSTER  = {"region", "cluster", "subnet": "10.201.0.0/24", "subnet_ipv6"?,
            "instances"?: [{"ipv4", "ipv6"?} | {"external": true}], "tasks": [{"family", "count", "group"?, RUN options...}],
            "stop"?: {"family", "count"}}
SERVICE  = {"region", "namespace", "service", "health_check"?: "custom",
            "records"?: ["SRV"] | ["A"] | ["CNAME"] ... (a private DNS namespace with these records,
            as ECS service discovery makes them; default: an HTTP namespace, no DNS records),
            "owner"?: "111122223333" (the namespace is that account's, shared with this one),
            "instances": [{"id", "ipv4"?, "ipv6"?, "port"?, "attributes"?, "health"?}]}

Output of run: [{"arn", "ip", "ipv6", "dns", "family", "task_definition", "metadata_uri",
                 "container_instance"?, "bindings"?: [{"containerPort", "hostPort"}]}]
(ip/ipv6/dns: the task's ENI for awsvpc; the container instance's for bridge and host.
metadata_uri: the task's ECS_CONTAINER_METADATA_URI_V4, at ENDPOINT.)
Output of seed: {"ecs": {"REGION/CLUSTER": {"running": [RUN output...], "stopped": [...],
                 "instances": [INSTANCE...]}}, "cloudmap": {"REGION/NAMESPACE/SERVICE": [{"id","ip"}]}}
Output of instances: [{"container_instance", "ec2_instance_id", "ipv4", "ipv6", "dns"}]
(an external instance: ec2_instance_id its managed-instance id "mi-…", no addresses; the tasks
on it have ip, ipv6 and dns null)
With WORLD_OUTPUT=erlang the output is an Erlang term (maps with binary keys) followed by a dot,
for tests on OTP versions without a JSON module.
Only the emulator at ENDPOINT (loopback, or the e2e bed's 10.200.0.1) is contacted.
"""
import json
import os
import sys
import urllib.request

import boto3
from botocore.config import Config

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
# The Cloud Map data plane would otherwise go to data-127.0.0.1, which does not resolve.
os.environ["AWS_DISABLE_HOST_PREFIX_INJECTION"] = "true"

ENDPOINT = sys.argv[1].rstrip("/") if __name__ == "__main__" else None
CFG = Config(retries={"max_attempts": 1}, inject_host_prefix=False)
# A VPC needs an IPv4 CIDR even when its subnets are IPv6-only; no address of it is ever used.
V6ONLY_VPC_CIDR = "172.31.0.0/16"


def check_endpoint(endpoint):
    # Only a loopback emulator, or one inside the end-to-end test bed's own namespace (10.200.0.1).
    assert endpoint.startswith(("http://127.0.0.1:", "http://10.200.0.1:")), \
        f"world.py only talks to a local emulator, not {endpoint}"


def client(service, region):
    return boto3.client(service, region_name=region, endpoint_url=ENDPOINT, config=CFG)


def control(path, body):
    """POSTs body to one of awsemu's control endpoints; returns its JSON answer."""
    req = urllib.request.Request(ENDPOINT + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        sys.exit(f"world.py: {path} answered {e.code}: {e.read().decode(errors='replace')}")


def subnet(region, cidr, cidr6=None):
    """The subnet with these CIDRs (IPv4 cidr, IPv6 cidr6; cidr None = IPv6-only), made once."""
    ec2 = client("ec2", region)
    for s in ec2.describe_subnets()["Subnets"]:
        v6 = [a["Ipv6CidrBlock"] for a in s.get("Ipv6CidrBlockAssociationSet", [])]
        if s.get("CidrBlock") == cidr and (cidr6 is None or cidr6 in v6) and (cidr or cidr6 in v6):
            return s["SubnetId"]
    vpc_args = {"CidrBlock": cidr or V6ONLY_VPC_CIDR}
    if cidr6:
        vpc_args["AmazonProvidedIpv6CidrBlock"] = True
    vpc = ec2.create_vpc(**vpc_args)["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    sub_args = {"VpcId": vpc}
    if cidr:
        sub_args["CidrBlock"] = cidr
    else:
        sub_args["Ipv6Native"] = True
    if cidr6:
        sub_args["Ipv6CidrBlock"] = cidr6
    return ec2.create_subnet(**sub_args)["Subnet"]["SubnetId"]


def ensure_cluster(region, name):
    ecs = client("ecs", region)
    if not ecs.describe_clusters(clusters=[name])["clusters"]:
        ecs.create_cluster(clusterName=name)


def task_definition(region, family, launch_type, mode, port_mappings, container, new_revision, revision):
    """The taskDefinition to run: FAMILY:N, the latest revision when it has this shape, or a new one."""
    ecs = client("ecs", region)
    if revision:
        return f"{family}:{revision}"
    mappings = [{k: v for k, v in pm.items() if k in ("containerPort", "hostPort", "protocol")}
                for pm in port_mappings or []]
    if not new_revision:
        try:
            td = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
            c = td["containerDefinitions"][0]
            same = (td.get("networkMode") == mode and c["name"] == container
                    and c.get("portMappings", []) == mappings)
            if same:
                return td["taskDefinitionArn"]
        except ecs.exceptions.ClientException:
            pass
    args = dict(family=family, networkMode=mode,
                containerDefinitions=[{"name": container, "image": container, "memory": 128,
                                       "portMappings": mappings}])
    if launch_type == "FARGATE":
        args.update(requiresCompatibilities=["FARGATE"], cpu="256", memory="512")
    elif launch_type == "EXTERNAL":
        args.update(requiresCompatibilities=["EXTERNAL"])
    else:
        args.update(requiresCompatibilities=["EC2"])
    return ecs.register_task_definition(**args)["taskDefinition"]["taskDefinitionArn"]


def _hosts(region, cluster, arns):
    """{container instance ARN: {"ipv4", "ipv6", "dns"}} through DescribeContainerInstances and
    ec2:DescribeInstances, as a discovery client would find them."""
    if not arns:
        return {}
    ecs, ec2 = client("ecs", region), client("ec2", region)
    cis = ecs.describe_container_instances(cluster=cluster, containerInstances=sorted(arns))["containerInstances"]
    # ECS Anywhere instances (mi-…) are not EC2 instances: no address to find.
    ids = {ci["ec2InstanceId"]: ci["containerInstanceArn"] for ci in cis if not ci["ec2InstanceId"].startswith("mi-")}
    out = {ci["containerInstanceArn"]: {"ipv4": None, "ipv6": None, "dns": None} for ci in cis}
    if not ids:
        return out
    for r in ec2.describe_instances(InstanceIds=list(ids))["Reservations"]:
        for i in r["Instances"]:
            v6 = [a["Ipv6Address"] for n in i.get("NetworkInterfaces", []) for a in n.get("Ipv6Addresses", [])]
            out[ids[i["InstanceId"]]] = {"ipv4": i.get("PrivateIpAddress"), "ipv6": v6[0] if v6 else None,
                                         "dns": i.get("PrivateDnsName")}
    return out


def describe(region, cluster, task):
    """One task of a RunTask/DescribeTasks answer as world.py reports it (host filled in later)."""
    details = {d["name"]: d["value"] for a in task.get("attachments", [])
               if a["type"] == "ElasticNetworkInterface" for d in a["details"]}
    family, rev = task["taskDefinitionArn"].rsplit("/", 1)[-1].split(":")
    out = {"arn": task["taskArn"], "ip": details.get("privateIPv4Address"), "ipv6": details.get("ipv6Address"),
           "dns": details.get("privateDnsName"), "family": family, "task_definition": task["taskDefinitionArn"],
           "metadata_uri": f"{ENDPOINT}/v4/{task['taskArn'].rsplit('/', 1)[-1]}"}
    if task.get("containerInstanceArn"):
        out["container_instance"] = task["containerInstanceArn"]
    bindings = [{"containerPort": b["containerPort"], "hostPort": b["hostPort"]}
                for c in task.get("containers", []) for b in c.get("networkBindings", []) or []]
    if bindings or task.get("containerInstanceArn") and not details:
        out["bindings"] = bindings
    return out


def ensure_service(region, cluster, name, task_definition):
    """The ECS service `name` (desired count 0: its tasks are the ones `run` starts with group
    `service:NAME`), made with the cluster when new: ListTasks' serviceName filter answers
    ServiceNotFoundException for a service the cluster does not have, as AWS does."""
    ensure_cluster(region, cluster)
    ecs = client("ecs", region)
    got = ecs.describe_services(cluster=cluster, services=[name])["services"]
    if not any(s["status"] != "INACTIVE" for s in got):
        ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=task_definition, desiredCount=0)


def run_tasks(region, cluster, cidr, family, count, group=None, container="app", **opts):
    launch_type = opts.get("launch_type") or "FARGATE"
    mode = opts.get("network_mode") or "awsvpc"
    ecs = client("ecs", region)
    td = task_definition(region, family, launch_type, mode, opts.get("port_mappings"), container,
                         opts.get("new_revision"), opts.get("revision"))
    common = {"cluster": cluster, "taskDefinition": td}
    if group:
        common["group"] = group
    if opts.get("tags"):
        common["tags"] = [{"key": k, "value": v} for k, v in opts["tags"].items()]
    if mode == "awsvpc":
        sub = subnet(region, cidr, opts.get("subnet_ipv6"))
        common["networkConfiguration"] = {"awsvpcConfiguration": {
            "subnets": [sub], "securityGroups": [], "assignPublicIp": "DISABLED"}}
    if group and group.startswith("service:"):
        ensure_service(region, cluster, group.split(":", 1)[1], td)
    tasks, failures = [], []
    while count > 0:
        n = min(count, 10)
        try:
            if opts.get("container_instance"):
                r = ecs.start_task(containerInstances=[opts["container_instance"]] * n, **common)
            else:
                r = ecs.run_task(launchType=launch_type, count=n, **common)
        except ecs.exceptions.ClusterNotFoundException:
            ecs.create_cluster(clusterName=cluster)  # `run` makes the cluster when it is new
            continue
        tasks += r["tasks"]
        failures += r["failures"]
        count -= n
    if failures:
        sys.exit(f"world.py run: ECS could not place every task: {failures}")
    out = [describe(region, cluster, t) for t in tasks]
    hosts = _hosts(region, cluster, {o["container_instance"] for o in out if "container_instance" in o})
    for o in out:
        if o.get("ip") is None and o.get("ipv6") is None and "container_instance" in o:
            h = hosts[o["container_instance"]]
            o.update(ip=h["ipv4"], ipv6=h["ipv6"], dns=h["dns"])
    arns = [o["arn"] for o in out]
    if arns and (opts.get("health") or opts.get("service_connect")):
        body = {"region": region, "cluster": cluster, "tasks": arns}
        if opts.get("health"):
            body["healthStatus"] = opts["health"]
        if opts.get("service_connect"):
            body["serviceConnect"] = True
        control("/_emu/tasks", body)
    return out


RUN_OPTIONS = ("subnet_ipv6", "launch_type", "network_mode", "container_instance", "port_mappings",
               "revision", "new_revision", "tags", "health", "service_connect")


def run_spec(spec, cidr=None, subnet_ipv6=None):
    opts = {k: spec[k] for k in RUN_OPTIONS if k in spec}
    if subnet_ipv6 and "subnet_ipv6" not in opts:
        opts["subnet_ipv6"] = subnet_ipv6
    return run_tasks(spec["region"], spec["cluster"], spec.get("subnet", cidr), spec["family"], spec["count"],
                     spec.get("group"), spec.get("container", "app"), **opts)


def instances(region, cluster, cidr, specs, cidr6=None):
    """EC2 instances with the given addresses in the subnet, registered as container instances."""
    ensure_cluster(region, cluster)
    ec2, ecs = client("ec2", region), client("ecs", region)
    sub = subnet(region, cidr, cidr6) if any(not s.get("external") for s in specs) else None
    out = []
    for s in specs:
        if s.get("external"):
            managed_id = "mi-" + os.urandom(9).hex()[:17]
            doc = json.dumps({"instanceId": managed_id, "region": region})
            ci = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=doc)["containerInstance"]
            out.append({"container_instance": ci["containerInstanceArn"], "ec2_instance_id": managed_id,
                        "ipv4": None, "ipv6": None, "dns": None})
            continue
        inst = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.large",
                                 SubnetId=sub, PrivateIpAddress=s["ipv4"])["Instances"][0]
        if s.get("ipv6"):
            ec2.assign_ipv6_addresses(NetworkInterfaceId=inst["NetworkInterfaces"][0]["NetworkInterfaceId"],
                                      Ipv6Addresses=[s["ipv6"]])
        doc = json.dumps({"instanceId": inst["InstanceId"], "region": region,
                          "availabilityZone": inst["Placement"]["AvailabilityZone"]})
        ci = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=doc)["containerInstance"]
        out.append({"container_instance": ci["containerInstanceArn"], "ec2_instance_id": inst["InstanceId"],
                     "ipv4": inst["PrivateIpAddress"], "ipv6": s.get("ipv6"), "dns": inst["PrivateDnsName"]})
    return out


def seed(spec):
    world = {"ecs": {}, "cloudmap": {}}
    for c in spec.get("ecs", []):
        region, name = c["region"], c["cluster"]
        ensure_cluster(region, name)
        insts = instances(region, name, c["subnet"], c["instances"], c.get("subnet_ipv6")) if c.get("instances") else []
        running = []
        for t in c.get("tasks", []):
            running += run_spec(dict(t, region=region, cluster=name), c.get("subnet"), c.get("subnet_ipv6"))
        stopped = []
        stop = c.get("stop")
        if stop:
            victims = [t for t in running if t["family"] == stop["family"]][: stop["count"]]
            stop_tasks(region, name, [v["arn"] for v in victims])
            stopped = victims
            running = [t for t in running if t not in victims]
        world["ecs"][f"{region}/{name}"] = {"running": running, "stopped": stopped, "instances": insts}
    for s in spec.get("cloudmap", []):
        sd = client("servicediscovery", s["region"])
        if s.get("records"):
            op = sd.create_private_dns_namespace(Name=s["namespace"], Vpc="vpc-emu")["OperationId"]
        else:
            op = sd.create_http_namespace(Name=s["namespace"])["OperationId"]
        ns_id = sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]
        svc_args = {"Name": s["service"], "NamespaceId": ns_id}
        if s.get("records"):
            svc_args["DnsConfig"] = {"RoutingPolicy": "MULTIVALUE",
                                     "DnsRecords": [{"Type": t, "TTL": 10} for t in s["records"]]}
        if s.get("health_check") == "custom":
            svc_args["HealthCheckCustomConfig"] = {"FailureThreshold": 1}
        svc = sd.create_service(**svc_args)["Service"]["Id"]
        insts = []
        for i in s.get("instances", []):
            attrs = dict(i.get("attributes", {}))
            if "ipv4" in i:
                attrs["AWS_INSTANCE_IPV4"] = i["ipv4"]
            if "ipv6" in i:
                attrs["AWS_INSTANCE_IPV6"] = i["ipv6"]
            if "port" in i:
                attrs["AWS_INSTANCE_PORT"] = str(i["port"])
            sd.register_instance(ServiceId=svc, InstanceId=i["id"], Attributes=attrs)
            if i.get("health"):
                sd.update_instance_custom_health_status(ServiceId=svc, InstanceId=i["id"], Status=i["health"])
            insts.append({"id": i["id"], "ip": i.get("ipv4") or i.get("ipv6")})
        if s.get("owner"):
            control("/_emu/cloudmap-share", {"region": s["region"], "namespace": s["namespace"], "owner": s["owner"]})
        world["cloudmap"][f"{s['region']}/{s['namespace']}/{s['service']}"] = insts
    return world


def tag_task(region, task, tags=None, untag=None):
    ecs = client("ecs", region)
    if tags:
        ecs.tag_resource(resourceArn=task, tags=[{"key": k, "value": v} for k, v in tags.items()])
    if untag:
        ecs.untag_resource(resourceArn=task, tagKeys=list(untag))
    return {t["key"]: t.get("value", "") for t in ecs.list_tags_for_resource(resourceArn=task)["tags"]}


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


def main():
    check_endpoint(ENDPOINT)
    cmd = sys.argv[2]
    spec = json.loads(sys.argv[3]) if len(sys.argv) > 3 else json.load(sys.stdin)
    if cmd == "seed":
        result = seed(spec)
    elif cmd == "run":
        result = run_spec(spec)
    elif cmd == "stop":
        result = stop_tasks(spec["region"], spec["cluster"], spec["tasks"])
    elif cmd == "instances":
        result = instances(spec["region"], spec["cluster"], spec["subnet"], spec["instances"], spec.get("subnet_ipv6"))
    elif cmd == "lifecycle":
        result = control("/_emu/lifecycle", spec)
    elif cmd == "health":
        result = control("/_emu/tasks", spec)
    elif cmd == "config":
        result = control("/_emu/config", spec)
    elif cmd == "tag":
        result = tag_task(spec["region"], spec["task"], spec.get("tags"), spec.get("untag"))
    elif cmd == "regions":
        result = control("/_emu/regions", spec)
    else:
        sys.exit(f"world.py: unknown command {cmd!r}; expected seed, run, stop, instances, lifecycle, health, config, tag or regions")
    if os.environ.get("WORLD_OUTPUT") == "erlang":
        sys.stdout.write(erlang_term(result) + ".")
    else:
        json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
