"""ECS on EC2: container instances backed by EC2 instances, bridge and host network bindings,
dynamic host ports, awsvpc tasks on EC2, DescribeContainerInstances limits, DNS names."""
import botocore.exceptions
import pytest

import world


def hosts(region, cluster="ec2", n=2, ipv6=False):
    specs = [{"ipv4": f"10.60.0.{10 + i}", **({"ipv6": f"fd00:60::{10 + i:x}"} if ipv6 else {})} for i in range(n)]
    return world.instances(region, cluster, "10.60.0.0/24", specs, "fd00:60::/64" if ipv6 else None)


def run(region, n, mode, mappings, **opts):
    return world.run_spec(dict({"region": region, "cluster": "ec2", "subnet": "10.60.0.0/24", "family": f"f-{mode}",
                                "count": n, "launch_type": "EC2", "network_mode": mode,
                                "port_mappings": mappings}, **opts))


@pytest.mark.parametrize("region,dns", [("us-east-1", "ip-10-60-0-10.ec2.internal"),
                                        ("eu-west-2", "ip-10-60-0-10.eu-west-2.compute.internal")])
def test_container_instances_lead_to_ec2_instances_with_their_addresses_and_dns_names(emu, region, dns):
    made = hosts(region, ipv6=True)
    ecs, ec2 = emu.client("ecs", region), emu.client("ec2", region)
    arns = ecs.list_container_instances(cluster="ec2")["containerInstanceArns"]
    assert sorted(arns) == sorted(h["container_instance"] for h in made)
    cis = ecs.describe_container_instances(cluster="ec2", containerInstances=arns)["containerInstances"]
    ids = [ci["ec2InstanceId"] for ci in cis]
    by_ip = {}
    for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
        for i in r["Instances"]:
            v6 = [a["Ipv6Address"] for n in i["NetworkInterfaces"] for a in n["Ipv6Addresses"]]
            by_ip[i["PrivateIpAddress"]] = (i["PrivateDnsName"], v6)
    assert by_ip["10.60.0.10"] == (dns, ["fd00:60::a"])
    assert set(by_ip) == {"10.60.0.10", "10.60.0.11"}


def test_bridge_mode_gets_dynamic_host_ports_unique_per_instance(emu):
    made = hosts("eu-west-2", n=1)
    tasks = run("eu-west-2", 3, "bridge", [{"containerPort": 4369}, {"containerPort": 9100, "hostPort": 0}])
    ports = [b["hostPort"] for t in tasks for b in t["bindings"]]
    assert len(set(ports)) == 6 and all(32768 <= p <= 60999 for p in ports)
    assert ports[:2] == [32768, 32769]
    assert {t["container_instance"] for t in tasks} == {made[0]["container_instance"]}
    assert {t["ip"] for t in tasks} == {"10.60.0.10"}  # the host's address, as discovery finds it
    ecs = emu.client("ecs", "eu-west-2")
    t = ecs.describe_tasks(cluster="ec2", tasks=[tasks[0]["arn"]])["tasks"][0]
    assert t["containerInstanceArn"] == made[0]["container_instance"] and t["attachments"] == []
    [c] = t["containers"]
    assert c["networkBindings"] == [
        {"bindIP": "0.0.0.0", "containerPort": 4369, "hostPort": 32768, "protocol": "tcp"},
        {"bindIP": "0.0.0.0", "containerPort": 9100, "hostPort": 32769, "protocol": "tcp"}]
    # A stopped task's ports are free again; a fixed hostPort is kept as given.
    ecs.stop_task(cluster="ec2", task=tasks[0]["arn"])
    again = run("eu-west-2", 1, "bridge", [{"containerPort": 80, "hostPort": 8080}], family="fixed")
    assert again[0]["bindings"] == [{"containerPort": 80, "hostPort": 8080}]


def test_host_mode_binds_the_container_port_and_a_clash_fails_placement(emu):
    made = hosts("eu-west-2", n=2)
    tasks = run("eu-west-2", 2, "host", [{"containerPort": 4369}])
    assert sorted(t["container_instance"] for t in tasks) == sorted(h["container_instance"] for h in made)
    assert all(t["bindings"] == [{"containerPort": 4369, "hostPort": 4369}] for t in tasks)
    ecs = emu.client("ecs", "eu-west-2")
    out = ecs.run_task(cluster="ec2", taskDefinition="f-host", launchType="EC2", count=1)
    assert out["tasks"] == [] and out["failures"][0]["reason"] == "RESOURCE:PORTS"
    out = ecs.start_task(cluster="ec2", taskDefinition="f-host", containerInstances=[made[0]["container_instance"]])
    assert out["tasks"] == [] and out["failures"] == [{"arn": made[0]["container_instance"], "reason": "RESOURCE:PORTS"}]


def test_start_task_places_on_the_chosen_instance_and_describe_container_instances_counts_it(emu):
    made = hosts("eu-west-2", n=2)
    chosen = made[1]["container_instance"]
    tasks = run("eu-west-2", 3, "bridge", [{"containerPort": 4369}], container_instance=chosen)
    assert {t["container_instance"] for t in tasks} == {chosen}
    ecs = emu.client("ecs", "eu-west-2")
    cis = {c["containerInstanceArn"]: c for c in
           ecs.describe_container_instances(cluster="ec2", containerInstances=[h["container_instance"] for h in made])[
               "containerInstances"]}
    assert cis[chosen]["runningTasksCount"] == 3 and cis[made[0]["container_instance"]]["runningTasksCount"] == 0
    assert sorted(ecs.list_tasks(cluster="ec2", containerInstance=chosen)["taskArns"]) == sorted(t["arn"] for t in tasks)


def test_describe_container_instances_takes_at_most_100_and_reports_unknown_ones(emu):
    made = hosts("eu-west-2", n=1)
    ecs = emu.client("ecs", "eu-west-2")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.describe_container_instances(cluster="ec2", containerInstances=[f"x{i}" for i in range(101)])
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    bogus = made[0]["container_instance"][:-4] + "ffff"
    out = ecs.describe_container_instances(cluster="ec2", containerInstances=[made[0]["container_instance"], bogus])
    assert [c["containerInstanceArn"] for c in out["containerInstances"]] == [made[0]["container_instance"]]
    assert out["failures"] == [{"arn": bogus, "reason": "MISSING"}]


def test_awsvpc_tasks_on_ec2_get_an_eni_and_a_container_instance(emu):
    made = hosts("eu-west-2", n=1)
    [t] = run("eu-west-2", 1, "awsvpc", [{"containerPort": 4369}], subnet="10.61.0.0/24")
    assert t["ip"] == "10.61.0.4" and t["container_instance"] == made[0]["container_instance"]
    d = emu.client("ecs", "eu-west-2").describe_tasks(cluster="ec2", tasks=[t["arn"]])["tasks"][0]
    assert d["launchType"] == "EC2" and d["attachments"][0]["type"] == "ElasticNetworkInterface"
    assert d["containers"][0]["networkInterfaces"][0]["privateIpv4Address"] == "10.61.0.4"
    assert not d["containers"][0].get("networkBindings")


def test_run_task_on_a_cluster_without_instances_is_an_error(emu):
    ecs = emu.client("ecs", "eu-west-2")
    ecs.create_cluster(clusterName="ec2")
    ecs.register_task_definition(family="b", networkMode="bridge", requiresCompatibilities=["EC2"],
                                 containerDefinitions=[{"name": "app", "image": "app", "memory": 128}])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.run_task(cluster="ec2", taskDefinition="b", launchType="EC2")
    assert "No Container Instances" in e.value.response["Error"]["Message"]
