"""ListTasks paging and filters, DescribeTasks limits, task IPs from the subnet, faults."""
import botocore.exceptions
import pytest

import world

R = "eu-west-2"


def seed(emu, cluster="web", count=3, **task):
    return world.seed({"ecs": [{"region": R, "cluster": cluster, "subnet": "10.201.0.0/24",
                                "tasks": [dict({"family": "api", "count": count}, **task)]}]})["ecs"][f"{R}/{cluster}"]


def test_task_ips_come_from_the_subnet_from_its_fifth_address_and_reset_restarts_the_count(emu):
    first = seed(emu, count=3)
    assert [t["ip"] for t in first["running"]] == ["10.201.0.4", "10.201.0.5", "10.201.0.6"]
    assert first["running"][0]["dns"] == "ip-10-201-0-4.eu-west-2.compute.internal"
    emu.ok("POST", "/moto-api/reset")
    assert [t["ip"] for t in seed(emu, count=1)["running"]] == ["10.201.0.4"]


def test_list_tasks_pages_and_checks_max_results(emu):
    arns = {t["arn"] for t in seed(emu, count=25)["running"]}
    ecs = emu.client("ecs", R)
    pages, token = [], None
    while True:
        kw = {"nextToken": token} if token else {}
        page = ecs.list_tasks(cluster="web", maxResults=10, **kw)
        pages.append(page["taskArns"])
        token = page.get("nextToken")
        if not token:
            break
    assert [len(p) for p in pages] == [10, 10, 5]
    assert {a for p in pages for a in p} == arns
    assert len(ecs.list_tasks(cluster="web")["taskArns"]) == 25  # default page: 100
    for bad in (0, 101):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ecs.list_tasks(cluster="web", maxResults=bad)
        assert e.value.response["Error"]["Code"] == "InvalidParameterException"


def test_list_tasks_defaults_to_running_filters_by_service_and_matches_the_cluster_exactly(emu):
    world.seed({"ecs": [
        {"region": R, "cluster": "web", "subnet": "10.201.0.0/24",
         "tasks": [{"family": "api", "count": 2, "group": "service:api"}, {"family": "api", "count": 1}],
         "stop": {"family": "api", "count": 1}},
        {"region": R, "cluster": "web2", "subnet": "10.202.0.0/24", "tasks": [{"family": "api", "count": 4}]}]})
    ecs = emu.client("ecs", R)
    running = ecs.list_tasks(cluster="web")["taskArns"]
    assert len(running) == 2  # the stopped one is not listed without desiredStatus
    assert len(ecs.list_tasks(cluster="web", desiredStatus="STOPPED")["taskArns"]) == 1
    assert len(ecs.list_tasks(cluster="web", serviceName="api")["taskArns"]) == 1
    assert len(ecs.list_tasks(cluster="web2")["taskArns"]) == 4
    assert all("/web/" in a for a in running)


def test_list_tasks_of_a_service_the_cluster_does_not_have_is_service_not_found(emu):
    seed(emu, count=1, group="service:api")
    ecs = world.client("ecs", R)
    assert len(ecs.list_tasks(cluster="web", serviceName="api")["taskArns"]) == 1
    for name in ("admin", "arn:aws:ecs:eu-west-2:123456789012:service/web/admin"):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ecs.list_tasks(cluster="web", serviceName=name)
        assert e.value.response["Error"]["Code"] == "ServiceNotFoundException"
    # Deleted (INACTIVE): not found either; a service scaled to zero is found, with no tasks.
    ecs.update_service(cluster="web", service="api", desiredCount=0)
    ecs.create_service(cluster="web", serviceName="idle", taskDefinition="api", desiredCount=0)
    assert ecs.list_tasks(cluster="web", serviceName="idle")["taskArns"] == []
    ecs.delete_service(cluster="web", service="idle")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.list_tasks(cluster="web", serviceName="idle")
    assert e.value.response["Error"]["Code"] == "ServiceNotFoundException"


def test_describe_tasks_rejects_more_than_100_and_reports_unknown_tasks_missing(emu):
    w = world.seed({"ecs": [{"region": R, "cluster": "web", "subnet": "10.201.0.0/24",
                             "tasks": [{"family": "api", "count": 2}]},
                            {"region": R, "cluster": "other", "subnet": "10.202.0.0/24",
                             "tasks": [{"family": "api", "count": 1}]}]})["ecs"]
    ecs = emu.client("ecs", R)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.describe_tasks(cluster="web", tasks=[f"t{i}" for i in range(101)])
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    mine = [t["arn"] for t in w[f"{R}/web"]["running"]]
    foreign = w[f"{R}/other"]["running"][0]["arn"]
    bogus = mine[0][:-4] + "ffff"
    out = ecs.describe_tasks(cluster="web", tasks=mine + [foreign, bogus])
    assert sorted(t["taskArn"] for t in out["tasks"]) == sorted(mine)
    assert sorted((f["arn"], f["reason"]) for f in out["failures"]) == sorted([(foreign, "MISSING"), (bogus, "MISSING")])
    t = out["tasks"][0]
    assert t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING" and t["healthStatus"] == "UNKNOWN"
    # Describing does not move a task on (stock moto advances one state per DescribeTasks).
    assert ecs.describe_tasks(cluster="web", tasks=mine)["tasks"][0]["lastStatus"] == "RUNNING"


def test_faults_match_operation_and_region_count_down_and_count_hits(emu):
    seed(emu)
    emu.ok("POST", "/_fault", [{"operation": "ListTasks", "region": R, "count": 2, "status": 400,
                                "code": "ThrottlingException", "message": "Rate exceeded"}])
    ecs = emu.client("ecs", R)
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ecs.list_tasks(cluster="web")
        assert e.value.response["Error"]["Code"] == "ThrottlingException"
    assert len(ecs.list_tasks(cluster="web")["taskArns"]) == 3
    [f] = emu.ok("GET", "/_fault")
    assert (f["hits"], f["count"]) == (2, 0)
    emu.ok("DELETE", "/_fault")
    assert emu.ok("GET", "/_fault") == []


def test_faults_reach_ec2_cloud_map_and_describe_container_instances(emu):
    world.seed({"cloudmap": [{"region": R, "namespace": "ns", "service": "api", "instances": [{"id": "a", "ipv4": "10.9.0.5"}]}]})
    emu.ok("POST", "/_fault", [
        {"operation": "DescribeInstances", "status": 503, "code": "Unavailable", "message": "try later"},
        {"operation": "DiscoverInstances", "region": R, "status": 400, "code": "RequestLimitExceeded"},
        {"operation": "DescribeContainerInstances", "status": 500, "code": "ServerException"}])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        emu.client("ec2", R).describe_instances()
    assert e.value.response["Error"]["Code"] == "Unavailable"  # EC2's XML error body
    with pytest.raises(botocore.exceptions.ClientError) as e:
        emu.client("servicediscovery", R).discover_instances(NamespaceName="ns", ServiceName="api")
    assert e.value.response["Error"]["Code"] == "RequestLimitExceeded"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        emu.client("ecs", R).describe_container_instances(cluster="web", containerInstances=["x"])
    assert e.value.response["Error"]["Code"] == "ServerException"
    assert [f["hits"] for f in emu.ok("GET", "/_fault")] == [1, 1, 1]
    assert len(emu.client("servicediscovery", R).discover_instances(NamespaceName="ns", ServiceName="api")["Instances"]) == 1


def test_a_fault_for_one_region_leaves_the_others_alone(emu):
    world.seed({"ecs": [{"region": R, "cluster": "web", "subnet": "10.201.0.0/24", "tasks": [{"family": "api", "count": 1}]},
                        {"region": "us-west-2", "cluster": "web", "subnet": "10.202.0.0/24", "tasks": [{"family": "api", "count": 1}]}]})
    emu.ok("POST", "/_fault", {"operation": "*", "region": "us-west-2", "count": 5, "status": 500, "code": "ServerException"})
    assert len(emu.client("ecs", R).list_tasks(cluster="web")["taskArns"]) == 1
    with pytest.raises(botocore.exceptions.ClientError):
        emu.client("ecs", "us-west-2").list_tasks(cluster="web")


def test_a_fault_for_one_caller_leaves_the_other_callers_alone(emu):
    seed(emu)
    denied = {"operation": "ListTasks", "region": R, "count": 5, "status": 400, "code": "AccessDeniedException",
              "message": "User: arn:aws:sts::123456789012:assumed-role/app/t is not authorized to perform: ecs:ListTasks"}
    emu.ok("POST", "/_fault", dict(denied, caller="10.201.0.9"))
    ecs = emu.client("ecs", R)
    assert len(ecs.list_tasks(cluster="web")["taskArns"]) == 3, "another caller: not refused"
    [f] = emu.ok("GET", "/_fault")
    assert (f.get("hits", 0), f["count"]) == (0, 5)
    emu.ok("DELETE", "/_fault")
    emu.ok("POST", "/_fault", dict(denied, caller="127.0.0.1"))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.list_tasks(cluster="web")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    emu.ok("DELETE", "/_fault")


def test_a_caller_on_a_dual_stack_listener_is_named_by_its_ipv4_address():
    # A dual-stack listener reports an IPv4 client as ::ffff:a.b.c.d; a fault for that caller,
    # and the call log, name it a.b.c.d as the test beds do.
    from awsemu import faults
    from awsemu.state import request_caller
    assert request_caller({"REMOTE_ADDR": "::ffff:10.201.0.11"}) == "10.201.0.11"
    assert request_caller({"REMOTE_ADDR": "fdec:5ee5:201::4"}) == "fdec:5ee5:201::4"
    assert request_caller({"REMOTE_ADDR": "10.201.0.11"}) == "10.201.0.11"
    environ = {"REMOTE_ADDR": "::ffff:10.201.0.11", "REQUEST_METHOD": "POST",
               "HTTP_X_AMZ_TARGET": "AmazonEC2ContainerServiceV20141113.ListTasks",
               "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=test/20261205/us-west-2/ecs/aws4_request"}
    faults._faults.append({"operation": "ListTasks", "region": "us-west-2", "caller": "10.201.0.11", "count": 1})
    try:
        assert faults.match(environ) is not None
    finally:
        faults._faults.clear()


def test_the_call_log_records_client_operation_and_region_of_every_aws_call_faulted_or_not(emu):
    world.seed({"ecs": [{"region": R, "cluster": "web", "subnet": "10.201.0.0/24", "tasks": [{"family": "api", "count": 1}]},
                        {"region": "us-west-2", "cluster": "web", "subnet": "10.202.0.0/24", "tasks": [{"family": "api", "count": 1}]}]})
    emu.ok("DELETE", "/_emu/calls")
    start = emu.ok("GET", "/_emu/calls")["now"]
    assert emu.ok("GET", "/_emu/calls")["calls"] == [], "control requests are not AWS calls"
    emu.ok("POST", "/_fault", {"operation": "ListTasks", "region": "us-west-2", "count": 1, "status": 400,
                               "code": "ThrottlingException"})
    arns = emu.client("ecs", R).list_tasks(cluster="web")["taskArns"]
    emu.client("ecs", R).describe_tasks(cluster="web", tasks=arns)
    with pytest.raises(botocore.exceptions.ClientError):
        emu.client("ecs", "us-west-2").list_tasks(cluster="web")
    log = emu.ok("GET", f"/_emu/calls?since={start}")
    assert [c[1:] for c in log["calls"]] == [["127.0.0.1", "ListTasks", R], ["127.0.0.1", "DescribeTasks", R],
                                             ["127.0.0.1", "ListTasks", "us-west-2"]]
    assert all(start <= c[0] <= log["now"] for c in log["calls"])
    assert emu.ok("GET", f"/_emu/calls?since={log['now'] + 1}")["calls"] == []
    status, text = emu.http("GET", "/_emu/calls?since=yesterday")
    assert status == 400 and "since='yesterday'" in text and "unix time" in text
    emu.ok("DELETE", "/_emu/calls")
    assert emu.ok("GET", "/_emu/calls")["calls"] == []
