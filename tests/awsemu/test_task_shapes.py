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
