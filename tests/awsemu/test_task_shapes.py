"""IPv6 (dual-stack and IPv6-only ENIs), DNS names per region, task health, tags, task-definition
revisions and the Service Connect attachment."""
import world


def details(task):
    [eni] = [a for a in task["attachments"] if a["type"] == "ElasticNetworkInterface"]
    return {d["name"]: d["value"] for d in eni["details"]}


def describe(emu, region, arns, **kw):
    return emu.client("ecs", region).describe_tasks(cluster="web", tasks=arns, **kw)["tasks"]


def test_dual_stack_tasks_get_ipv4_and_ipv6_from_the_subnet(emu):
    ts = world.run_spec({"region": "us-east-1", "cluster": "web", "subnet": "10.70.0.0/24",
                         "subnet_ipv6": "fd00:70::/64", "family": "api", "count": 2})
    assert [(t["ip"], t["ipv6"]) for t in ts] == [("10.70.0.4", "fd00:70::4"), ("10.70.0.5", "fd00:70::5")]
    [t, _] = describe(emu, "us-east-1", [x["arn"] for x in ts])
    d = details(t)
    assert (d["privateIPv4Address"], d["ipv6Address"], d["privateDnsName"]) == \
        ("10.70.0.4", "fd00:70::4", "ip-10-70-0-4.ec2.internal")
    assert t["containers"][0]["networkInterfaces"][0] == {
        "attachmentId": t["attachments"][0]["id"], "privateIpv4Address": "10.70.0.4", "ipv6Address": "fd00:70::4"}


def test_ipv6_only_tasks_have_no_ipv4_anywhere(emu):
    [t] = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": None,
                          "subnet_ipv6": "fd00:71::/64", "family": "api", "count": 1})
    assert (t["ip"], t["ipv6"]) == (None, "fd00:71::4")
    [d] = describe(emu, "eu-west-2", [t["arn"]])
    det = details(d)
    assert "privateIPv4Address" not in det and det["ipv6Address"] == "fd00:71::4"
    assert det["privateDnsName"].endswith(".eu-west-2.compute.internal")
    assert d["containers"][0]["networkInterfaces"][0] == {"attachmentId": d["attachments"][0]["id"],
                                                          "ipv6Address": "fd00:71::4"}


def test_arns_are_in_the_regions_partition(emu):
    [t] = world.run_spec({"region": "cn-north-1", "cluster": "web", "subnet": "10.75.0.0/24", "family": "api",
                          "count": 1})
    assert t["arn"].startswith("arn:aws-cn:ecs:cn-north-1:123456789012:task/web/")
    [d] = describe(emu, "cn-north-1", [t["arn"]])
    assert d["taskArn"] == t["arn"]
    assert d["clusterArn"] == "arn:aws-cn:ecs:cn-north-1:123456789012:cluster/web"
    assert d["containers"][0]["containerArn"].startswith("arn:aws-cn:ecs:cn-north-1:123456789012:container/web/")


def test_health_status_is_unknown_until_set_and_set_per_task(emu):
    ts = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": "10.72.0.0/24", "family": "api",
                         "count": 3, "health": "HEALTHY"})
    arns = [t["arn"] for t in ts]
    assert {t["healthStatus"] for t in describe(emu, "eu-west-2", arns)} == {"HEALTHY"}
    emu.ok("POST", "/_emu/tasks", {"region": "eu-west-2", "cluster": "web", "tasks": arns[:1], "healthStatus": "UNHEALTHY"})
    got = {t["taskArn"]: (t["healthStatus"], t["containers"][0]["healthStatus"]) for t in describe(emu, "eu-west-2", arns)}
    assert got == {arns[0]: ("UNHEALTHY", "UNHEALTHY"), arns[1]: ("HEALTHY", "HEALTHY"), arns[2]: ("HEALTHY", "HEALTHY")}
    [fresh] = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": "10.72.0.0/24", "family": "api", "count": 1})
    assert describe(emu, "eu-west-2", [fresh["arn"]])[0]["healthStatus"] == "UNKNOWN"


def test_tags_come_back_only_with_include_tags(emu):
    [t] = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": "10.73.0.0/24", "family": "api",
                          "count": 1, "tags": {"team": "core", "ecs-peers": "yes"}})
    assert "tags" not in describe(emu, "eu-west-2", [t["arn"]])[0]
    tagged = describe(emu, "eu-west-2", [t["arn"]], include=["TAGS"])[0]
    assert sorted((x["key"], x["value"]) for x in tagged["tags"]) == [("ecs-peers", "yes"), ("team", "core")]


def _tags(task):
    return sorted((t["key"], t.get("value", "")) for t in task.get("tags", []))


def test_a_running_tasks_tags_change_with_tag_and_untag_resource(emu):
    ecs = emu.client("ecs", "eu-west-2")
    [t] = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": "10.73.1.0/24", "family": "api",
                          "count": 1, "tags": {"team": "core", "stage": "blue"}})
    ecs.tag_resource(resourceArn=t["arn"], tags=[{"key": "team", "value": "edge"}, {"key": "canary", "value": ""}])
    [d] = describe(emu, "eu-west-2", [t["arn"]], include=["TAGS"])
    assert _tags(d) == [("canary", ""), ("stage", "blue"), ("team", "edge")]
    ecs.untag_resource(resourceArn=t["arn"], tagKeys=["stage", "canary"])
    assert _tags(describe(emu, "eu-west-2", [t["arn"]], include=["TAGS"])[0]) == [("team", "edge")]
    assert _tags(ecs.list_tags_for_resource(resourceArn=t["arn"])) == [("team", "edge")]
    assert "tags" not in describe(emu, "eu-west-2", [t["arn"]])[0]
    # Another region's client does not find it; an unknown task is not found either.
    other = emu.client("ecs", "us-west-2")
    for client, arn in [(other, t["arn"]), (ecs, t["arn"][:-4] + "0000")]:
        try:
            client.tag_resource(resourceArn=arn, tags=[{"key": "a", "value": "b"}])
            raise AssertionError("tagged a task that is not there")
        except client.exceptions.ResourceNotFoundException:
            pass


def test_tags_keep_ecs_limits(emu):
    ecs = emu.client("ecs", "eu-west-2")
    [t] = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": "10.73.2.0/24", "family": "api",
                          "count": 1, "tags": {f"k{i}": "v" for i in range(49)}})
    ecs.tag_resource(resourceArn=t["arn"], tags=[{"key": "k0", "value": "w"}, {"key": "k49", "value": "v"}])
    for bad in ([{"key": "k50", "value": "v"}], [{"key": "aws:ecs:clusterName", "value": "x"}],
                [{"key": "k0", "value": "AWS:x"}], [{"key": "k" * 129, "value": "v"}]):
        try:
            ecs.tag_resource(resourceArn=t["arn"], tags=bad)
            raise AssertionError(f"ECS would refuse {bad}")
        except ecs.exceptions.InvalidParameterException:
            pass
    assert len(describe(emu, "eu-west-2", [t["arn"]], include=["TAGS"])[0]["tags"]) == 50


def test_run_task_propagates_the_task_definitions_tags_only_when_asked(emu):
    ecs = emu.client("ecs", "eu-west-2")
    [t] = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": "10.73.3.0/24", "family": "api",
                          "count": 1})
    td = ecs.describe_tasks(cluster="web", tasks=[t["arn"]])["tasks"][0]["taskDefinitionArn"]
    ecs.tag_resource(resourceArn=td, tags=[{"key": "team", "value": "core"}, {"key": "stage", "value": "blue"}])
    net = {"awsvpcConfiguration": {"subnets": [world.subnet("eu-west-2", "10.73.3.0/24")]}}
    run = dict(cluster="web", taskDefinition=td, launchType="FARGATE", networkConfiguration=net)
    [plain] = ecs.run_task(**run)["tasks"]
    [copied] = ecs.run_task(**run, propagateTags="TASK_DEFINITION", tags=[{"key": "stage", "value": "green"}])["tasks"]
    got = {x["taskArn"]: _tags(x) for x in describe(emu, "eu-west-2", [plain["taskArn"], copied["taskArn"]],
                                                    include=["TAGS"])}
    assert got == {plain["taskArn"]: [], copied["taskArn"]: [("stage", "green"), ("team", "core")]}
    # Copied at creation: a later tag on the task definition does not reach the task.
    ecs.tag_resource(resourceArn=td, tags=[{"key": "owner", "value": "x"}])
    assert _tags(describe(emu, "eu-west-2", [copied["taskArn"]], include=["TAGS"])[0]) == \
        [("stage", "green"), ("team", "core")]
    try:
        ecs.run_task(**run, propagateTags="SERVICE")
        raise AssertionError("SERVICE outside a service")
    except ecs.exceptions.InvalidParameterException:
        pass


def test_task_definition_revisions_are_in_the_arn_and_a_given_revision_runs(emu):
    base = {"region": "eu-west-2", "cluster": "web", "subnet": "10.74.0.0/24", "family": "api", "count": 1}
    [v1] = world.run_spec(base)
    [v2] = world.run_spec(dict(base, new_revision=True))
    [old] = world.run_spec(dict(base, revision=1))
    assert [t["task_definition"].rsplit("/", 1)[-1] for t in (v1, v2, old)] == ["api:1", "api:2", "api:1"]
    got = {t["taskArn"]: t["taskDefinitionArn"].rsplit("/", 1)[-1]
           for t in describe(emu, "eu-west-2", [v1["arn"], v2["arn"], old["arn"]])}
    assert got == {v1["arn"]: "api:1", v2["arn"]: "api:2", old["arn"]: "api:1"}
    # ListTasks' family filter covers every revision.
    assert len(emu.client("ecs", "eu-west-2").list_tasks(cluster="web", family="api")["taskArns"]) == 3


def test_service_connect_puts_an_attachment_beside_the_eni(emu):
    [t] = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": "10.75.0.0/24", "family": "api",
                          "count": 1, "group": "service:api", "service_connect": True})
    [d] = describe(emu, "eu-west-2", [t["arn"]])
    assert [a["type"] for a in d["attachments"]] == ["ElasticNetworkInterface", "ServiceConnect"]
    assert details(d)["privateIPv4Address"] == "10.75.0.4"
