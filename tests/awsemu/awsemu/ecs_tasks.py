"""ECS tasks as AWS makes them: RunTask/StartTask/StopTask/ListTasks/DescribeTasks and
DescribeContainerInstances, replacing moto's handlers for those operations, and a task's tags
(TagResource/UntagResource/ListTagsForResource on a task ARN).

What moto 5.2.5 gets wrong and this module does instead (each checked by tests/awsemu):
- moto builds one container per task (the first definition), IPs random 10.x whatever the subnet,
  no networkBindings, no IPv6, ENI DNS names always `*.ec2.internal`, tasks that advance a state
  on every DescribeTasks, ListTasks without paging / serviceName / the RUNNING default, and
  DescribeTasks matching task ids as substrings across clusters without failures[], tags of
  a task looked up by listing every task (a 500 for an unknown one), no propagateTags on RunTask,
  no tag limits.
- Here: one container per container definition; awsvpc tasks get an ENI with addresses from the
  subnet (IPv4, IPv6 or both, see ec2_instances); bridge and host tasks on EC2 are placed on a
  container instance and get networkBindings; the lifecycle is ecs_lifecycle's.

ECS Anywhere: a container instance registered with an `instanceId` of the SSM managed-instance
form (`mi-` and 17 hex digits) is EXTERNAL: a server outside AWS, with no EC2 instance behind it
(DescribeInstances does not know it; its attributes name no AMI, zone or instance type). Tasks of
launch type EXTERNAL run only there, in bridge, host or none network mode, and tasks of launch
type EC2 never do (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-anywhere.html).

Task ids are 32 hex digits and task ARNs use the long format
(`arn:PARTITION:ecs:REGION:ACCOUNT:task/CLUSTER/ID`), as AWS has since 2021, in the region's
partition (`aws-cn` in cn-north-1, `aws-us-gov` in us-gov-west-1), as moto writes its own ARNs.
"""
import uuid

import json
import types

from moto.core.responses import ActionResult, EmptyResult
from moto.ecs.models import ContainerInstance, TaskDefinition
from moto.ecs import responses as ecs_responses
from moto.ecs.exceptions import (ClusterNotFoundException, ECSException, InvalidParameterException,
                                 ServiceNotFoundException)
from moto.utilities.utils import get_partition

from . import ec2_instances, ecs_lifecycle, state

# Host ports the ECS agent reserves on every container instance (ECS_RESERVED_PORTS default,
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-agent-config.html).
RESERVED_PORTS = (22, 2375, 2376, 51678, 51679)
# Dynamic host ports for bridge mode (hostPort 0 or absent): from the instance's ephemeral port
# range, /proc/sys/net/ipv4/ip_local_port_range, 32768-60999 on Linux
# (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_PortMapping.html). The agent
# picks a free one per container port; awsemu takes the next free port after the last one it gave
# on that instance (the agent's own choice among free ports is not documented).
DYNAMIC_RANGE = (32768, 60999)
# Most user tags one ECS resource carries (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Tag.html).
MAX_TAGS = 50


class ResourceNotFoundException(ECSException):
    def __init__(self, message):
        super().__init__("ResourceNotFoundException", message)

_tasks_by_id = {}  # task id -> EmuTask, for the metadata endpoint and /_emu control
_ports = {}  # container instance ARN -> {host port: task id}
_next_port = {}  # container instance ARN -> next dynamic port to try
_bridge_ips = {}  # container instance ARN -> next docker bridge host index


@state.on_reset
def _reset():
    _tasks_by_id.clear()
    _ports.clear()
    _next_port.clear()
    _bridge_ips.clear()


def is_external(ci):
    """An ECS Anywhere container instance: its ec2InstanceId is a managed-instance id."""
    return (ci.ec2_instance_id or "").startswith("mi-")


class ExternalContainerInstance(ContainerInstance):
    """A container instance of ECS Anywhere (see the module doc)."""

    def __init__(self, managed_id, account_id, region, cluster_name, backend):
        # moto's ContainerInstance reads its attributes from the EC2 instance, which an external
        # instance does not have: it reads a stand-in here, and the attributes are then ECS
        # Anywhere's own.
        ec2 = state.ec2(region)
        ec2.get_instance = lambda _id: types.SimpleNamespace(
            image_id=None, availability_zone=None, instance_type=None, platform=None)
        try:
            super().__init__(managed_id, account_id, region, cluster_name, backend)
        finally:
            del ec2.get_instance
        self.attributes = {"ecs.os-type": "linux"}


_stock_task_definition_init = TaskDefinition.__init__


def _task_definition_init(self, *args, **kwargs):
    # moto reads any requiresCompatibilities but ["EC2"] as Fargate's and forces awsvpc; a task
    # definition for EXTERNAL keeps its network mode (bridge when none is given), and lists
    # EXTERNAL among its compatibilities, as ECS does.
    _stock_task_definition_init(self, *args, **kwargs)
    requires = kwargs.get("requires_compatibilities") or []
    if "EXTERNAL" in requires and "FARGATE" not in requires:
        self.network_mode = kwargs.get("network_mode") or "bridge"
        self.compatibilities = ["EC2", "EXTERNAL"]


TaskDefinition.__init__ = _task_definition_init


def register_container_instance(self):
    """RegisterContainerInstance: an EC2 instance by its identity document as moto does, or an
    ECS Anywhere instance when the document names a managed instance (`mi-…`)."""
    doc = json.loads(self._get_param("instanceIdentityDocument") or "{}")
    managed_id = doc.get("instanceId", "")
    if not managed_id.startswith("mi-"):
        return _stock_register(self)
    backend = self.ecs_backend
    cluster = _cluster(backend, self._get_param("cluster"))
    ci = ExternalContainerInstance(managed_id, backend.account_id, self.region, cluster.name, backend)
    backend.container_instances.setdefault(cluster.name, {})[ci.container_instance_arn.split("/")[-1]] = ci
    cluster.registered_container_instances_count += 1
    return ActionResult({"containerInstance": ci})


_stock_register = ecs_responses.EC2ContainerServiceResponse.register_container_instance


def find(task_id):
    with state.LOCK:
        return _tasks_by_id.get(task_id)


def all_tasks():
    with state.LOCK:
        return list(_tasks_by_id.values())


class EmuContainer:
    """One container of a task (ECS API `Container`; attribute names are what moto's serializer
    looks up: the camelCase member name or its snake_case form)."""

    def __init__(self, task, definition, launch_type):
        self.name = definition.get("name")
        self.image = definition.get("image")
        self.container_arn = (f"arn:{get_partition(task.region)}:ecs:{task.region}:{state.ACCOUNT}:container/{task.cluster_name}/"
                              f"{task.id}/{uuid.uuid4()}")
        self.task_arn = task.task_arn
        # Fargate runtime ids are "<task id>-<number>"; on EC2 they are Docker container ids.
        self.runtime_id = (f"{task.id}-{uuid.uuid4().int % 10**10}" if launch_type == "FARGATE"
                           else uuid.uuid4().hex + uuid.uuid4().hex)
        self.last_status = "PENDING"
        self.health_status = "UNKNOWN"
        self.cpu = str(definition.get("cpu", 0))
        if definition.get("memory") is not None:
            self.memory = str(definition["memory"])
        if definition.get("memoryReservation") is not None:
            self.memory_reservation = str(definition["memoryReservation"])
        self.port_mappings = definition.get("portMappings") or []
        self.network_interfaces = []
        self.network_bindings = None
        self.bridge_ipv4 = None  # docker bridge address (bridge mode), for the metadata endpoint


class EmuTask:
    """One ECS task (ECS API `Task`)."""

    def __init__(self, region, cluster, task_def, launch_type, group, started_by, tags, container_instance=None):
        self.id = uuid.uuid4().hex
        self.region = region
        self.cluster_name = cluster.name
        self.cluster_arn = cluster.arn
        self.task_arn = f"arn:{get_partition(region)}:ecs:{region}:{state.ACCOUNT}:task/{cluster.name}/{self.id}"
        self.task_definition_arn = task_def.arn
        self.family = task_def.family
        self.revision = task_def.revision
        self.network_mode = task_def.network_mode or "bridge"
        self.launch_type = launch_type
        self.group = group or f"family:{task_def.family}"
        self.started_by = started_by
        self.tags = list(tags or [])
        self.container_instance = container_instance  # moto ContainerInstance (EC2) or None
        self.container_instance_arn = container_instance.container_instance_arn if container_instance else None
        self.ec2_instance_id = container_instance.ec2_instance_id if container_instance else None
        self.cpu = task_def.cpu
        self.memory = task_def.memory
        self.desired_status = "RUNNING"
        self.last_status = "PROVISIONING"
        self.health_status = "UNKNOWN"
        self.connectivity = "CONNECTED"
        t = ecs_lifecycle.now()
        self.created_at = t
        self.connectivity_at = t
        self.pull_started_at = self.pull_stopped_at = self.started_at = None
        self.stopping_at = self.execution_stopped_at = self.stopped_at = None
        self.stop_code = None
        self.stopped_reason = None
        self.version = 1
        self.overrides = {"containerOverrides": [], "inferenceAcceleratorOverrides": []}
        self.enable_execute_command = False
        self.attachments = []
        self.availability_zone = None
        if launch_type == "FARGATE":
            self.platform_version = "1.4.0"
            self.platform_family = "Linux"
            self.ephemeral_storage = {"sizeInGiB": 20}
        self.eni = None  # ec2_instances.create_task_eni's dict (awsvpc)
        self.host = None  # ec2_instances.instance_addresses's dict (EC2 launch type)
        self.containers = [EmuContainer(self, d, launch_type) for d in task_def.container_definitions]

    # -- networking ------------------------------------------------------------------------------
    def attach_eni(self, subnet_id, security_groups):
        self.eni = ec2_instances.create_task_eni(self.region, subnet_id, security_groups)
        self.availability_zone = self.eni["subnet"]["az"]
        details = [
            {"name": "subnetId", "value": subnet_id},
            {"name": "networkInterfaceId", "value": self.eni["eni_id"]},
            {"name": "macAddress", "value": self.eni["mac"]},
            {"name": "privateDnsName", "value": self.eni["dns"]},
        ]
        if self.eni["ipv4"]:
            details.append({"name": "privateIPv4Address", "value": self.eni["ipv4"]})
        if self.eni["ipv6"]:
            details.append({"name": "ipv6Address", "value": self.eni["ipv6"]})
        self.attachments.append({"id": str(uuid.uuid4()), "type": "ElasticNetworkInterface",
                                 "status": "PRECREATED", "details": details})
        for c in self.containers:
            ni = {"attachmentId": self.attachments[0]["id"]}
            if self.eni["ipv4"]:
                ni["privateIpv4Address"] = self.eni["ipv4"]
            if self.eni["ipv6"]:
                ni["ipv6Address"] = self.eni["ipv6"]
            c.network_interfaces = [ni]

    def add_service_connect(self):
        """A Service Connect attachment beside the ENI, as ECS adds for a service that uses it.

        Its details name the Service Connect proxy container; the exact name ECS generates is
        not documented, awsemu uses `ecs-service-connect-<6 characters>`."""
        if any(a["type"] == "ServiceConnect" for a in self.attachments):
            return
        self.attachments.append({"id": str(uuid.uuid4()), "type": "ServiceConnect", "status": "ATTACHED",
                                 "details": [{"name": "ContainerName",
                                              "value": "ecs-service-connect-" + uuid.uuid4().hex[:6]}]})

    def on_status_change(self):
        """Keeps containers and attachments in step with lastStatus (ecs_lifecycle calls this)."""
        s = self.last_status
        if s in ("PROVISIONING", "PENDING", "ACTIVATING"):
            cstatus = "PENDING"
        elif s in ("RUNNING", "DEACTIVATING", "STOPPING"):
            cstatus = "RUNNING"
        else:
            cstatus = "STOPPED"
        for c in self.containers:
            c.last_status = cstatus
        # Attachment status values are those of the ECS API's Attachment shape.
        for a in self.attachments:
            if a["type"] != "ElasticNetworkInterface":
                a["status"] = "DELETED" if s == "STOPPED" else "ATTACHED"
            elif s == "PROVISIONING":
                a["status"] = "PRECREATED"
            elif s == "DEPROVISIONING":
                a["status"] = "DETACHING"
            elif s == "STOPPED":
                a["status"] = "DELETED"
            else:
                a["status"] = "ATTACHED"
        if s == "STOPPED":
            self.release()

    def release(self):
        """Frees host ports and deletes the task's ENI (once STOPPED)."""
        if self.container_instance_arn:
            used = _ports.get(self.container_instance_arn, {})
            for port in [p for p, owner in used.items() if owner == self.id]:
                del used[port]
        if self.eni and self.eni.get("eni_id"):
            ec2_instances.delete_task_eni(self.region, self.eni["eni_id"])
            self.eni = dict(self.eni, eni_id=None)

    def ips(self):
        """(ipv4, ipv6) another node would connect to: the ENI's, or the host's for bridge/host."""
        if self.eni:
            return self.eni["ipv4"], self.eni["ipv6"]
        if self.host:
            return self.host["ipv4"], self.host["ipv6"]
        return None, None


# -- placement on container instances -----------------------------------------------------------------

def _host_ports_needed(task_def, network_mode):
    """[(container name, containerPort, hostPort or 0, protocol)] of the task definition."""
    out = []
    for d in task_def.container_definitions:
        for pm in d.get("portMappings") or []:
            cport = pm.get("containerPort")
            if cport is None:
                continue
            hport = cport if network_mode == "host" else (pm.get("hostPort") or 0)
            out.append((d.get("name"), int(cport), int(hport), pm.get("protocol", "tcp")))
    return out


def _fits(ci_arn, needed):
    used = _ports.get(ci_arn, {})
    static = [h for (_, _, h, _) in needed if h]
    return len(set(static)) == len(static) and not any(h in used or h in RESERVED_PORTS for h in static)


def _dynamic_port(ci_arn):
    used = _ports.setdefault(ci_arn, {})
    lo, hi = DYNAMIC_RANGE
    p = _next_port.get(ci_arn, lo)
    for _ in range(hi - lo + 1):
        if p > hi:
            p = lo
        if p not in used and p not in RESERVED_PORTS:
            _next_port[ci_arn] = p + 1
            return p
        p += 1
    raise InvalidParameterException(f"container instance {ci_arn} has no free port in {lo}-{hi}")


def _bind(task, needed):
    """Gives the task's containers their networkBindings on its container instance."""
    ci_arn = task.container_instance_arn
    used = _ports.setdefault(ci_arn, {})
    by_name = {c.name: c for c in task.containers}
    for c in task.containers:
        c.network_bindings = []
    for name, cport, hport, proto in needed:
        if not hport:
            hport = _dynamic_port(ci_arn)
        used[hport] = task.id
        # bindIP 0.0.0.0: Docker publishes on every IPv4 address of the host. Whether ECS also
        # reports a "::" binding depends on the agent and Docker versions; awsemu reports IPv4 only.
        by_name[name].network_bindings.append(
            {"bindIP": "0.0.0.0", "containerPort": cport, "hostPort": hport, "protocol": proto})
    if task.network_mode == "bridge":
        for c in task.containers:
            i = _bridge_ips.get(ci_arn, 2)
            _bridge_ips[ci_arn] = i + 1
            c.bridge_ipv4 = f"172.17.{i // 256}.{i % 256}"


def _active_instances(backend, cluster):
    return [ci for ci in backend.container_instances.get(cluster.name, {}).values() if ci.status == "ACTIVE"]


def _running_count(ci_arn):
    return sum(1 for t in _tasks_by_id.values()
               if t.container_instance_arn == ci_arn and t.last_status != "STOPPED")


# -- the operations ---------------------------------------------------------------------------------

def _cluster(backend, name_or_arn):
    name = (name_or_arn or "default").split("/")[-1]
    cluster = backend.clusters.get(name)
    if cluster is None:
        raise ClusterNotFoundException
    return cluster


def _launch(resp, cluster, task_def, launch_type, count, instances):
    """Makes `count` tasks (or one per given container instance); returns (tasks, failures)."""
    backend = resp.ecs_backend
    region = resp.region
    mode = task_def.network_mode or "bridge"
    if launch_type == "FARGATE" and mode != "awsvpc":
        raise InvalidParameterException(
            f"Task definition does not support launch_type FARGATE (networkMode {mode}; Fargate needs awsvpc).")
    if launch_type == "EXTERNAL" and mode == "awsvpc":
        raise InvalidParameterException(
            "Task definition does not support launch_type EXTERNAL (networkMode awsvpc; external instances run bridge, host or none).")
    net = resp._get_param("networkConfiguration") or {}
    vpc = net.get("awsvpcConfiguration")
    if mode == "awsvpc":
        if not vpc or not vpc.get("subnets"):
            raise InvalidParameterException(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified.")
    elif vpc:
        raise InvalidParameterException(
            f"Network Configuration is not valid for the given networkMode of this task definition ({mode}).")
    group = resp._get_param("group")
    started_by = resp._get_param("startedBy")
    tags = _launch_tags(resp, task_def)
    needed = _host_ports_needed(task_def, mode) if mode in ("bridge", "host") else []
    tasks, failures = [], []
    slots = instances if instances is not None else [None] * count
    for chosen in slots:
        ci = None
        if launch_type in ("EC2", "EXTERNAL"):
            if chosen is not None:
                ci = chosen
                if needed and not _fits(ci.container_instance_arn, needed):
                    failures.append({"arn": ci.container_instance_arn, "reason": "RESOURCE:PORTS"})
                    continue
            else:
                candidates = [c for c in _active_instances(backend, cluster)
                              if is_external(c) == (launch_type == "EXTERNAL")]
                if not candidates:
                    raise InvalidParameterException("No Container Instances were found in your cluster.")
                fitting = [c for c in candidates if _fits(c.container_instance_arn, needed)]
                if not fitting:
                    failures.append({"arn": candidates[0].container_instance_arn, "reason": "RESOURCE:PORTS"})
                    continue
                # Least loaded first (AWS's placement strategies are not emulated).
                ci = min(fitting, key=lambda c: _running_count(c.container_instance_arn))
        task = EmuTask(region, cluster, task_def, launch_type, group, started_by, tags, ci)
        if ci is not None and not is_external(ci):
            task.host = ec2_instances.instance_addresses(region, ci.ec2_instance_id)
            task.availability_zone = task.host["az"]
        if mode == "awsvpc":
            try:
                task.attach_eni(vpc["subnets"][0], vpc.get("securityGroups"))
            except state.EmuError as e:  # the subnet is full: AWS fails the launch too
                raise InvalidParameterException(str(e))
        elif needed or mode in ("bridge", "host"):
            _bind(task, needed)
        ecs_lifecycle.set_status(task, ecs_lifecycle.start_status())
        backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
        _tasks_by_id[task.id] = task
        tasks.append(task)
    return tasks, failures


def _check_tags(tags):
    """ECS's limits on user tags (API_Tag, TagResource): key 1-128 characters, value 0-256, no
    `aws:` prefix in any case on a key or value, each key once, at most 50 on a resource."""
    keys = [t.get("key") or "" for t in tags]
    if len(set(keys)) != len(keys):
        raise InvalidParameterException("Tag keys must be unique.")
    if len(tags) > MAX_TAGS:
        raise InvalidParameterException(f"A resource can have at most {MAX_TAGS} tags.")
    for t in tags:
        key, value = t.get("key") or "", t.get("value") or ""
        if not 1 <= len(key) <= 128 or len(value) > 256:
            raise InvalidParameterException("Tag keys take 1-128 characters and values 0-256.")
        if key.lower().startswith("aws:") or value.lower().startswith("aws:"):
            raise InvalidParameterException("Tag keys and values cannot begin with aws:; the prefix is reserved for AWS use.")


def _launch_tags(resp, task_def):
    """RunTask/StartTask `tags`, and with `propagateTags: TASK_DEFINITION` the task definition's
    tags, copied once, at creation (API_RunTask: "Tags can only be propagated to the task during
    task creation"; SERVICE is an error outside a service). On a key in both, the request's tag is
    kept (AWS does not document it; an assumption)."""
    tags = list(resp._get_param("tags") or [])
    propagate = resp._get_param("propagateTags") or "NONE"
    if propagate == "SERVICE":
        raise InvalidParameterException("propagateTags SERVICE is only valid for tasks a service starts.")
    if propagate not in ("NONE", "TASK_DEFINITION"):
        raise InvalidParameterException(f"propagateTags must be TASK_DEFINITION or NONE, not {propagate!r}.")
    if propagate == "TASK_DEFINITION":
        given = {t.get("key") for t in tags}
        tags += [dict(t) for t in (task_def.tags or []) if t.get("key") not in given]
    _check_tags(tags)
    return tags


def _launch_type(resp, cluster):
    launch_type = resp._get_param("launchType")
    strategy = resp._get_param("capacityProviderStrategy") or cluster.default_capacity_provider_strategy
    if launch_type and resp._get_param("capacityProviderStrategy"):
        raise InvalidParameterException("Specify either Launch Type or Capacity Provider Strategy, but not both.")
    if not launch_type and strategy:
        launch_type = "FARGATE" if strategy[0]["capacityProvider"] in ("FARGATE", "FARGATE_SPOT") else "EC2"
    launch_type = launch_type or "EC2"  # RunTask's default without a capacity provider strategy
    if launch_type not in ("EC2", "FARGATE", "EXTERNAL"):
        raise InvalidParameterException(f"launchType {launch_type} is not emulated; use EC2, FARGATE or EXTERNAL")
    return launch_type


def run_task(self):
    ecs_lifecycle.tick()
    cluster = _cluster(self.ecs_backend, self._get_param("cluster"))
    count = self._get_int_param("count", 1)
    if not 1 <= count <= 10:
        raise InvalidParameterException("count must be between 1 and 10.")
    task_def = self.ecs_backend.describe_task_definition(self._get_param("taskDefinition"))
    tasks, failures = _launch(self, cluster, task_def, _launch_type(self, cluster), count, None)
    return ActionResult({"tasks": tasks, "failures": failures})


def start_task(self):
    """StartTask: the task on the container instances named, one task each (launch type EC2, or
    EXTERNAL on ECS Anywhere instances)."""
    ecs_lifecycle.tick()
    backend = self.ecs_backend
    cluster = _cluster(backend, self._get_param("cluster"))
    wanted = self._get_param("containerInstances") or []
    if not 1 <= len(wanted) <= 10:
        raise InvalidParameterException("containerInstances must name between 1 and 10 container instances.")
    known = backend.container_instances.get(cluster.name, {})
    instances, failures = [], []
    for ref in wanted:
        ci = known.get(ref.split("/")[-1])
        if ci is None:
            failures.append({"arn": ref, "reason": "MISSING"})
        else:
            instances.append(ci)
    task_def = backend.describe_task_definition(self._get_param("taskDefinition"))
    if len({is_external(ci) for ci in instances}) > 1:
        raise InvalidParameterException("containerInstances mixes EC2 and external instances.")
    launch_type = "EXTERNAL" if instances and is_external(instances[0]) else "EC2"
    tasks, more = _launch(self, cluster, task_def, launch_type, len(instances), instances)
    return ActionResult({"tasks": tasks, "failures": failures + more})


def stop_task(self):
    ecs_lifecycle.tick()
    backend = self.ecs_backend
    cluster = _cluster(backend, self._get_param("cluster"))
    ref = self._get_param("task") or ""
    task = _task_in(backend, cluster, ref)
    if task is None:
        raise InvalidParameterException("The referenced task was not found.")
    ecs_lifecycle.stop(task, self._get_param("reason"))
    return ActionResult({"task": task})


def _task_in(backend, cluster, ref):
    task = _tasks_by_id.get(ref.split("/")[-1])
    if task is None or task.cluster_name != cluster.name or task.region != backend.region_name:
        return None
    if ref.startswith("arn:") and ref != task.task_arn:
        return None
    return task


def list_tasks(self):
    """Paged (maxResults 1..100, default 100; nextToken), desiredStatus RUNNING by default,
    exact cluster; family, startedBy, serviceName (task group `service:NAME`) and
    containerInstance filters. https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListTasks.html"""
    ecs_lifecycle.tick()
    backend = self.ecs_backend
    cluster = _cluster(backend, self._get_param("cluster"))
    max_results = self._get_param("maxResults")
    if max_results is not None and not 1 <= int(max_results) <= 100:
        raise InvalidParameterException("maxResults must be between 1 and 100.")
    desired = self._get_param("desiredStatus") or "RUNNING"
    family = self._get_param("family")
    started_by = self._get_param("startedBy")
    service = self._get_param("serviceName")
    ci = self._get_param("containerInstance")
    tasks = [t for t in backend.tasks.get(cluster.name, {}).values() if t.desired_status == desired]
    if family:
        tasks = [t for t in tasks if t.family == family]
    if started_by:
        tasks = [t for t in tasks if t.started_by == started_by]
    if service:
        name = service.split("/")[-1]
        # AWS answers a service the cluster does not have (never created, or deleted: INACTIVE)
        # with ServiceNotFoundException, not an empty list (ListTasks' documented errors).
        known = backend.services.get(f"{cluster.name}:{name}")
        if known is None or known.status == "INACTIVE":
            raise ServiceNotFoundException
        tasks = [t for t in tasks if t.group == f"service:{name}"]
    if ci:
        tasks = [t for t in tasks if t.container_instance_arn and
                 t.container_instance_arn.split("/")[-1] == ci.split("/")[-1]]
    arns = [t.task_arn for t in tasks]
    token = self._get_param("nextToken")
    try:
        start = int(token) if token else 0
    except ValueError:
        raise InvalidParameterException(f"Invalid nextToken {token!r}")
    n = int(max_results) if max_results else 100
    out = {"taskArns": arns[start:start + n]}
    if start + n < len(arns):
        out["nextToken"] = str(start + n)
    return ActionResult(out)


def describe_tasks(self):
    """At most 100 tasks; unknown ones (or of another cluster) in failures[] with reason MISSING."""
    ecs_lifecycle.tick()
    backend = self.ecs_backend
    cluster = _cluster(backend, self._get_param("cluster"))
    wanted = self._get_param("tasks") or []
    if not wanted:
        raise InvalidParameterException("Tasks cannot be empty.")
    if len(wanted) > 100:
        raise InvalidParameterException("Tasks cannot have more than 100 elements")
    found, failures = [], []
    for ref in wanted:
        task = _task_in(backend, cluster, ref)
        if task is None:
            failures.append({"arn": ref, "reason": "MISSING"})
        else:
            found.append(task)
    if "TAGS" in (self._get_param("include") or []):
        self._include_in_response(ecs_responses.DESCRIBE_TASKS_TAGS)
    else:
        self._exclude_from_response(ecs_responses.DESCRIBE_TASKS_TAGS)
    return ActionResult({"tasks": found, "failures": failures})


def _tagged_task(backend, arn):
    """The task a TagResource/UntagResource/ListTagsForResource ARN names, None when the ARN is not
    a task's; ResourceNotFoundException when it names no task of this region."""
    if ":task/" not in (arn or ""):
        return None
    task = _tasks_by_id.get(arn.rsplit("/", 1)[-1])
    if task is None or task.task_arn != arn or task.region != backend.region_name:
        raise ResourceNotFoundException("The specified resource wasn't found.")
    return task


def tag_resource(self):
    """On a task: adds the tags, a given key's value replaced (a running task's tags can change;
    DescribeTasks with include TAGS reports them from then on). Other resources: moto's."""
    task = _tagged_task(self.ecs_backend, self._get_param("resourceArn"))
    if task is None:
        return _MOTO["tag_resource"](self)
    new = self._get_param("tags") or []
    if not new:
        raise InvalidParameterException("Tags cannot be empty.")
    keys = {t.get("key") for t in new}
    merged = [t for t in task.tags if t["key"] not in keys] + [dict(t) for t in new]
    _check_tags(merged)
    task.tags = merged
    return EmptyResult()


def untag_resource(self):
    task = _tagged_task(self.ecs_backend, self._get_param("resourceArn"))
    if task is None:
        return _MOTO["untag_resource"](self)
    keys = set(self._get_param("tagKeys") or [])
    task.tags = [t for t in task.tags if t["key"] not in keys]
    return EmptyResult()


def list_tags_for_resource(self):
    task = _tagged_task(self.ecs_backend, self._get_param("resourceArn"))
    if task is None:
        return _MOTO["list_tags_for_resource"](self)
    return ActionResult({"tags": task.tags})


def describe_container_instances(self):
    """At most 100 per call; unknown ones in failures[] (reason MISSING); task counts from the
    tasks placed on each instance."""
    backend = self.ecs_backend
    cluster = _cluster(backend, self._get_param("cluster"))
    wanted = self._get_param("containerInstances") or []
    if not wanted:
        raise InvalidParameterException("Container Instances cannot be empty.")
    if len(wanted) > 100:
        raise InvalidParameterException("Container Instances cannot have more than 100 elements")
    known = backend.container_instances.get(cluster.name, {})
    found, failures = [], []
    for ref in wanted:
        ci = known.get(ref.split("/")[-1])
        if ci is None or (ref.startswith("arn:") and ref != ci.container_instance_arn):
            failures.append({"arn": ref, "reason": "MISSING"})
            continue
        arn = ci.container_instance_arn
        ci.running_tasks_count = sum(1 for t in _tasks_by_id.values()
                                     if t.container_instance_arn == arn and t.last_status == "RUNNING")
        ci.pending_tasks_count = sum(1 for t in _tasks_by_id.values()
                                     if t.container_instance_arn == arn and t.last_status in
                                     ("PROVISIONING", "PENDING", "ACTIVATING"))
        found.append(ci)
    return ActionResult({"containerInstances": found, "failures": failures})


_MOTO = {}  # moto's own handlers of the operations replaced here for tasks only


def install():
    R = ecs_responses.EC2ContainerServiceResponse
    for name in ("tag_resource", "untag_resource", "list_tags_for_resource"):
        _MOTO.setdefault(name, getattr(R, name))
    R.tag_resource = tag_resource
    R.untag_resource = untag_resource
    R.list_tags_for_resource = list_tags_for_resource
    R.run_task = run_task
    R.start_task = start_task
    R.stop_task = stop_task
    R.list_tasks = list_tasks
    R.describe_tasks = describe_tasks
    R.describe_container_instances = describe_container_instances
    R.register_container_instance = register_container_instance
