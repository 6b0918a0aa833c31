"""The task lifecycle: StopTask at once (default), held stops advanced by the test or a clock,
held starts, and the fields AWS sets on the way."""
import botocore.exceptions
import pytest

import world
from conftest import wait_for

R = "eu-west-2"


def one_task(emu, **opts):
    [t] = world.run_spec(dict({"region": R, "cluster": "web", "subnet": "10.201.0.0/24", "family": "api",
                               "count": 1}, **opts))
    return t["arn"]


def describe(emu, arn):
    out = emu.client("ecs", R).describe_tasks(cluster="web", tasks=[arn])
    assert not out["failures"], out["failures"]
    return out["tasks"][0]


@pytest.fixture
def web(emu):
    emu.client("ecs", R).create_cluster(clusterName="web")
    return emu


def test_stop_task_stops_at_once_by_default_with_the_fields_aws_sets(web):
    arn = one_task(web)
    ecs = web.client("ecs", R)
    stopped = ecs.stop_task(cluster="web", task=arn, reason="scale in")["task"]
    assert (stopped["lastStatus"], stopped["desiredStatus"]) == ("STOPPED", "STOPPED")
    t = describe(web, arn)
    assert (t["lastStatus"], t["desiredStatus"], t["stopCode"], t["stoppedReason"]) == \
        ("STOPPED", "STOPPED", "UserInitiated", "scale in")
    assert t["startedAt"] <= t["stoppingAt"] <= t["executionStoppedAt"] <= t["stoppedAt"]
    assert {c["lastStatus"] for c in t["containers"]} == {"STOPPED"}
    assert t["attachments"][0]["status"] == "DELETED"
    assert ecs.list_tasks(cluster="web")["taskArns"] == []
    assert ecs.list_tasks(cluster="web", desiredStatus="STOPPED")["taskArns"] == [arn]


def test_a_held_stop_stays_deactivating_until_the_test_advances_it(web):
    web.ok("POST", "/_emu/config", {"stop": "hold"})
    arn = one_task(web)
    ecs = web.client("ecs", R)
    ecs.stop_task(cluster="web", task=arn)
    t = describe(web, arn)
    assert (t["lastStatus"], t["desiredStatus"]) == ("DEACTIVATING", "STOPPED")  # awsvpc
    assert "stoppingAt" in t and "stoppedAt" not in t
    assert {c["lastStatus"] for c in t["containers"]} == {"RUNNING"}
    # ListTasks filters on desiredStatus: a stopping task is listed under STOPPED at once.
    assert ecs.list_tasks(cluster="web")["taskArns"] == []
    assert ecs.list_tasks(cluster="web", desiredStatus="STOPPED")["taskArns"] == [arn]
    for state in ("STOPPING", "DEPROVISIONING"):
        web.ok("POST", "/_emu/lifecycle", {"region": R, "cluster": "web", "tasks": [arn], "lastStatus": state})
        assert describe(web, arn)["lastStatus"] == state
    t = describe(web, arn)
    assert "executionStoppedAt" in t and t["attachments"][0]["status"] == "DETACHING"
    web.ok("POST", "/_emu/lifecycle", {"region": R, "cluster": "web", "tasks": [arn], "lastStatus": "STOPPED"})
    t = describe(web, arn)
    assert (t["lastStatus"], t["stopCode"]) == ("STOPPED", "UserInitiated") and "stoppedAt" in t


def test_a_held_stop_of_a_bridge_task_stays_stopping(web):
    web.ok("POST", "/_emu/config", {"stop": "hold"})
    world.instances(R, "web", "10.201.0.0/24", [{"ipv4": "10.201.0.10"}])
    arn = one_task(web, launch_type="EC2", network_mode="bridge", family="br",
                   port_mappings=[{"containerPort": 4369}])
    web.client("ecs", R).stop_task(cluster="web", task=arn)
    assert describe(web, arn)["lastStatus"] == "STOPPING"


def test_a_held_stop_ends_on_the_clock(web):
    web.ok("POST", "/_emu/config", {"stop": "hold", "stop_hold_s": 0.5})
    arn = one_task(web)
    web.client("ecs", R).stop_task(cluster="web", task=arn)
    assert describe(web, arn)["lastStatus"] == "DEACTIVATING"
    wait_for(lambda: describe(web, arn)["lastStatus"] == "STOPPED", "the held task to stop on the clock")


def test_a_held_start_stays_provisioning_until_advanced(web):
    web.ok("POST", "/_emu/config", {"start": "hold"})
    arn = one_task(web)
    t = describe(web, arn)
    assert (t["lastStatus"], t["desiredStatus"]) == ("PROVISIONING", "RUNNING")
    assert t["attachments"][0]["status"] == "PRECREATED" and "startedAt" not in t
    assert {c["lastStatus"] for c in t["containers"]} == {"PENDING"}
    assert web.client("ecs", R).list_tasks(cluster="web")["taskArns"] == [arn]  # desired RUNNING
    for state in ("PENDING", "ACTIVATING", "RUNNING"):
        web.ok("POST", "/_emu/lifecycle", {"region": R, "cluster": "web", "tasks": [arn], "lastStatus": state})
        t = describe(web, arn)
        assert (t["lastStatus"], t["desiredStatus"]) == (state, "RUNNING")
    assert t["pullStartedAt"] <= t["pullStoppedAt"] <= t["startedAt"]
    assert t["attachments"][0]["status"] == "ATTACHED"


def test_a_stop_the_test_makes_without_stop_task_looks_like_an_exited_container(web):
    arn = one_task(web)
    out = web.ok("POST", "/_emu/lifecycle", {"region": R, "cluster": "web", "tasks": [arn], "lastStatus": "STOPPING"})
    assert out["tasks"][0]["desiredStatus"] == "STOPPED"
    t = describe(web, arn)
    assert (t["stopCode"], t["stoppedReason"]) == ("EssentialContainerExited", "Essential container in task exited")


def test_control_requests_name_what_is_wrong(web):
    arn = one_task(web)
    status, msg = web.http("POST", "/_emu/lifecycle", {"region": R, "cluster": "web", "tasks": [arn], "lastStatus": "GONE"})
    assert status == 400 and "GONE" in msg
    status, msg = web.http("POST", "/_emu/lifecycle", {"region": R, "cluster": "other", "tasks": [arn], "lastStatus": "STOPPED"})
    assert status == 400 and arn in msg
    status, msg = web.http("POST", "/_emu/config", {"stop": "later"})
    assert status == 400 and "later" in msg
    assert web.ok("GET", "/_emu/config") == {"stop": "immediate", "stop_hold_s": None, "start": "immediate"}


def test_stop_task_of_an_unknown_task_is_an_error(web):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        web.client("ecs", R).stop_task(cluster="web", task="0" * 32)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
