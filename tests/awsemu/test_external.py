"""ECS Anywhere: EXTERNAL container instances (managed instances, `mi-…`), which are not EC2
instances, and the tasks that run on them."""
import botocore.exceptions
import pytest

import world


def mixed(emu, region="eu-west-2"):
    return world.instances(region, "hybrid", "10.70.0.0/24", [{"ipv4": "10.70.0.10"}, {"external": True}])


def test_an_external_instance_has_a_managed_instance_id_that_ec2_does_not_know(emu):
    ec2_host, external = mixed(emu)
    assert external["ec2_instance_id"].startswith("mi-") and len(external["ec2_instance_id"]) == 20
    ecs = emu.client("ecs", "eu-west-2")
    cis = {ci["containerInstanceArn"]: ci for ci in ecs.describe_container_instances(
        cluster="hybrid", containerInstances=[ec2_host["container_instance"], external["container_instance"]])
        ["containerInstances"]}
    ext = cis[external["container_instance"]]
    assert ext["ec2InstanceId"] == external["ec2_instance_id"] and ext["status"] == "ACTIVE"
    assert {a["name"] for a in ext["attributes"]} == {"ecs.os-type"}
    assert cis[ec2_host["container_instance"]]["ec2InstanceId"].startswith("i-")
    # EC2 knows the EC2 host only.
    found = emu.client("ec2", "eu-west-2").describe_instances(
        Filters=[{"Name": "instance-id", "Values": [ext["ec2InstanceId"], ec2_host["ec2_instance_id"]]}])
    ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
    assert ids == [ec2_host["ec2_instance_id"]]


def test_external_tasks_run_only_on_external_instances_and_ec2_tasks_never_do(emu):
    ec2_host, external = mixed(emu)
    bridge = [{"containerPort": 4370, "hostPort": 0}]
    ext_tasks = world.run_spec({"region": "eu-west-2", "cluster": "hybrid", "subnet": None, "family": "edge",
                                "count": 3, "launch_type": "EXTERNAL", "network_mode": "bridge",
                                "port_mappings": bridge})
    assert {t["container_instance"] for t in ext_tasks} == {external["container_instance"]}
    assert all(t["ip"] is None and t["bindings"][0]["hostPort"] >= 32768 for t in ext_tasks)
    ec2_tasks = world.run_spec({"region": "eu-west-2", "cluster": "hybrid", "subnet": None, "family": "core",
                                "count": 3, "launch_type": "EC2", "network_mode": "bridge",
                                "port_mappings": bridge})
    assert {t["container_instance"] for t in ec2_tasks} == {ec2_host["container_instance"]}
    described = emu.client("ecs", "eu-west-2").describe_tasks(
        cluster="hybrid", tasks=[ext_tasks[0]["arn"], ec2_tasks[0]["arn"]])["tasks"]
    assert {t["taskArn"]: t["launchType"] for t in described} == {ext_tasks[0]["arn"]: "EXTERNAL",
                                                                  ec2_tasks[0]["arn"]: "EC2"}


def test_external_tasks_cannot_use_awsvpc_or_run_without_an_external_instance(emu):
    world.instances("eu-west-2", "ec2only", "10.71.0.0/24", [{"ipv4": "10.71.0.10"}])
    ecs = emu.client("ecs", "eu-west-2")
    td = world.task_definition("eu-west-2", "edge", "EXTERNAL", "bridge", [], "app", False, None)
    with pytest.raises(botocore.exceptions.ClientError, match="No Container Instances"):
        ecs.run_task(cluster="ec2only", taskDefinition=td, launchType="EXTERNAL")
    vpc = world.task_definition("eu-west-2", "edge-vpc", "EXTERNAL", "awsvpc", [], "app", False, None)
    with pytest.raises(botocore.exceptions.ClientError, match="EXTERNAL"):
        ecs.run_task(cluster="ec2only", taskDefinition=vpc, launchType="EXTERNAL",
                     networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-1"]}})
