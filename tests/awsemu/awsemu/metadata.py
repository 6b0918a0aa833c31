"""Task metadata endpoint v4, one per task, served by the emulator itself.

A task's ECS_CONTAINER_METADATA_URI_V4 is `http://HOST:PORT/v4/<task id>`:
  GET /v4/<task id>        the container's own metadata (the task's first container)
  GET /v4/<task id>/task   the task's metadata
Shapes: https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-metadata-endpoint-v4-response.html
(EC2, examples in task-metadata-endpoint-v4-examples.html) and the Fargate variant
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-metadata-endpoint-v4-fargate-response.html
(examples in task-metadata-endpoint-v4-fargate-examples.html). The differences kept here:
- "Cluster" is the cluster ARN on Fargate and the cluster *name* on EC2 (as the agent is
  configured); "ServiceName" and "VPCID" appear on EC2 only (ServiceName from agent 1.63.1, only
  for tasks of a service); "LaunchType" is FARGATE or EC2.
- Networks[] of an awsvpc container: NetworkMode, IPv4Addresses, AttachmentIndex, MACAddress,
  IPv4SubnetCIDRBlock, DomainNameServers, DomainNameSearchList, PrivateDNSName,
  SubnetGatewayIpv4Address; IPv6Addresses and IPv6SubnetCIDRBlock when the subnet has IPv6.
  For an IPv6-only subnet the IPv4 fields are left out; that AWS leaves them out (rather than
  sending them empty) is an assumption: the documentation shows no IPv6-only example.
- bridge containers: Networks [{NetworkMode bridge, IPv4Addresses [docker bridge address]}] and
  Ports [{ContainerPort, Protocol, HostPort, HostIp}] (HostIp since agent 1.61); host containers:
  Networks [{NetworkMode host}] (what the agent puts in IPv4Addresses for host mode is not
  documented, so none) and Ports with HostPort = ContainerPort.
Failure answers: `POST /_emu/metadata-fault {"task": "<task id>"|"*", "status": 400,
"body": "..."}` makes matching requests answer that status with that body (the agent answers
e.g. 400 `unable to associate '172.17.0.5' with task` when it cannot tell the caller's task);
`DELETE /_emu/metadata-fault` clears. An unknown task id gets 404 with the agent's kind of text
(its exact wording varies by agent version).
"""
import ipaddress
import json

from . import ecs_lifecycle, ecs_tasks, state

_faults = {}  # task id or "*" -> (status, body)


@state.on_reset
def _reset():
    _faults.clear()


def set_fault(body):
    task = body.get("task")
    if not isinstance(task, str) or not task:
        raise state.EmuError("/_emu/metadata-fault: \"task\" must be a task id or \"*\"")
    status = body.get("status", 400)
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise state.EmuError(f"/_emu/metadata-fault: status {status!r} is not an HTTP status")
    with state.LOCK:
        _faults[task] = (status, body.get("body", ""))
        return {k: {"status": s, "body": b} for k, (s, b) in _faults.items()}


def clear_faults():
    with state.LOCK:
        _faults.clear()


def _iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if dt else None


def _networks(task, container, index):
    mode = task.network_mode
    if mode == "awsvpc" and task.eni:
        eni = task.eni
        sub = eni["subnet"]
        net = {"NetworkMode": "awsvpc", "AttachmentIndex": 0, "MACAddress": eni["mac"],
               "DomainNameSearchList": [f"{task.region}.compute.internal" if task.region != "us-east-1"
                                        else "ec2.internal"],
               "PrivateDNSName": eni["dns"]}
        if eni["ipv4"]:
            v4net = ipaddress.ip_network(sub["ipv4_cidr"], strict=False)
            net["IPv4Addresses"] = [eni["ipv4"]]
            net["IPv4SubnetCIDRBlock"] = str(v4net)
            # The VPC resolver is the VPC's base address + 2; awsemu has one VPC per subnet in
            # world.py, so the subnet's base + 2 stands in for it.
            net["DomainNameServers"] = [str(v4net.network_address + 2)]
            net["SubnetGatewayIpv4Address"] = f"{v4net.network_address + 1}/{v4net.prefixlen}"
        if eni["ipv6"]:
            net["IPv6Addresses"] = [eni["ipv6"]]
            net["IPv6SubnetCIDRBlock"] = str(ipaddress.ip_network(sub["ipv6_cidr"], strict=False))
        return [net]
    if mode == "bridge":
        return [{"NetworkMode": "bridge", "IPv4Addresses": [container.bridge_ipv4]}]
    if mode == "host":
        return [{"NetworkMode": "host"}]
    return []


def _container_doc(task, container, index):
    fargate = task.launch_type == "FARGATE"
    cluster = task.cluster_arn if fargate else task.cluster_name
    doc = {
        "DockerId": container.runtime_id,
        "Name": container.name,
        "DockerName": container.name if fargate else f"ecs-{task.family}-{task.revision}-{container.name}",
        "Image": container.image,
        "ImageID": "sha256:" + "0" * 64,
        "Labels": {
            "com.amazonaws.ecs.cluster": cluster,
            "com.amazonaws.ecs.container-name": container.name,
            "com.amazonaws.ecs.task-arn": task.task_arn,
            "com.amazonaws.ecs.task-definition-family": task.family,
            "com.amazonaws.ecs.task-definition-version": str(task.revision),
        },
        "DesiredStatus": "STOPPED" if task.desired_status == "STOPPED" else "RUNNING",
        "KnownStatus": container.last_status,
        "Limits": {"CPU": int(container.cpu or 0), "Memory": int(getattr(container, "memory", 0) or 0)},
        "CreatedAt": _iso(task.created_at),
        "StartedAt": _iso(task.started_at),
        "Type": "NORMAL",
        "ContainerARN": container.container_arn,
        "Networks": _networks(task, container, index),
    }
    if task.stopped_at:
        doc["FinishedAt"] = _iso(task.stopped_at)
    if container.network_bindings:
        doc["Ports"] = [{"ContainerPort": b["containerPort"], "Protocol": b["protocol"],
                         "HostPort": b["hostPort"], "HostIp": b["bindIP"]} for b in container.network_bindings]
    if container.health_status in ("HEALTHY", "UNHEALTHY"):
        doc["Health"] = {"status": container.health_status}
    return {k: v for k, v in doc.items() if v is not None}


def task_doc(task):
    fargate = task.launch_type == "FARGATE"
    doc = {
        "Cluster": task.cluster_arn if fargate else task.cluster_name,
        "TaskARN": task.task_arn,
        "Family": task.family,
        "Revision": str(task.revision),
        "DesiredStatus": task.desired_status,
        "KnownStatus": task.last_status,
        "Containers": [_container_doc(task, c, i) for i, c in enumerate(task.containers)],
        "PullStartedAt": _iso(task.pull_started_at),
        "PullStoppedAt": _iso(task.pull_stopped_at),
        "AvailabilityZone": task.availability_zone,
        "LaunchType": task.launch_type,
    }
    if task.cpu or task.memory:
        doc["Limits"] = {}
        if task.cpu:
            doc["Limits"]["CPU"] = int(task.cpu) / 1024
        if task.memory:
            doc["Limits"]["Memory"] = int(task.memory)
    if task.stopped_at:
        doc["ExecutionStoppedAt"] = _iso(task.execution_stopped_at)
    if not fargate:
        if task.group.startswith("service:"):
            doc["ServiceName"] = task.group[len("service:"):]
        vpc = (task.eni or {}).get("subnet", {}).get("vpc") or (task.host or {}).get("vpc")
        if vpc:
            doc["VPCID"] = vpc
    return {k: v for k, v in doc.items() if v is not None}


def handle(environ):
    """GET /v4/<task id>[/task]: returns (status, headers, body)."""
    ecs_lifecycle.tick()
    parts = environ.get("PATH_INFO", "").strip("/").split("/")
    task_id = parts[1] if len(parts) > 1 else ""
    rest = parts[2:]
    with state.LOCK:
        fault = _faults.get(task_id) or _faults.get("*")
        if fault:
            status, body = fault
            return status, [("Content-Type", "text/plain")], body
        task = ecs_tasks.find(task_id)
        if task is None:
            return 404, [("Content-Type", "application/json")], json.dumps(
                f"V4 task metadata handler: unable to get task arn from request: no task with id {task_id!r}")
        if rest == []:
            body = _container_doc(task, task.containers[0], 0)
        elif rest == ["task"]:
            body = task_doc(task)
        else:
            return 404, [("Content-Type", "text/plain")], "404 page not found"
        return 200, [("Content-Type", "application/json")], json.dumps(body)
