"""Task metadata endpoint v4 per task: Fargate, EC2 awsvpc, EC2 bridge and host, IPv6-only,
following the lifecycle, and its failure answers."""
import json
import urllib.error
import urllib.request

import world


def get(uri):
    try:
        with urllib.request.urlopen(uri, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_fargate_task_metadata_has_the_documented_fields(emu):
    [t] = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": "10.80.0.0/24", "family": "api",
                          "count": 1, "group": "service:api"})
    assert t["metadata_uri"] == f"{emu.endpoint}/v4/{t['arn'].rsplit('/', 1)[-1]}"
    status, md = get(t["metadata_uri"] + "/task")
    assert status == 200
    assert md["Cluster"] == "arn:aws:ecs:eu-west-2:123456789012:cluster/web"  # Fargate: the ARN
    assert (md["TaskARN"], md["Family"], md["Revision"]) == (t["arn"], "api", "1")
    assert (md["DesiredStatus"], md["KnownStatus"], md["LaunchType"]) == ("RUNNING", "RUNNING", "FARGATE")
    assert md["AvailabilityZone"].startswith("eu-west-2")
    assert "ServiceName" not in md and "VPCID" not in md  # EC2 only
    [net] = md["Containers"][0]["Networks"]
    assert net["NetworkMode"] == "awsvpc" and net["IPv4Addresses"] == ["10.80.0.4"]
    assert (net["IPv4SubnetCIDRBlock"], net["PrivateDNSName"], net["AttachmentIndex"]) == \
        ("10.80.0.0/24", "ip-10-80-0-4.eu-west-2.compute.internal", 0)
    assert net["MACAddress"] and "IPv6Addresses" not in net
    status, own = get(t["metadata_uri"])
    assert status == 200 and own["Name"] == "app" and own["Labels"]["com.amazonaws.ecs.task-arn"] == t["arn"]


def test_ec2_bridge_and_host_metadata_report_ports_and_the_short_cluster_name(emu):
    world.instances("us-east-1", "ec2", "10.81.0.0/24", [{"ipv4": "10.81.0.10"}, {"ipv4": "10.81.0.11"}])
    [b] = world.run_spec({"region": "us-east-1", "cluster": "ec2", "subnet": None, "family": "b", "count": 1,
                          "launch_type": "EC2", "network_mode": "bridge", "group": "service:api",
                          "port_mappings": [{"containerPort": 4369}]})
    status, md = get(b["metadata_uri"] + "/task")
    assert status == 200
    assert (md["Cluster"], md["LaunchType"], md["ServiceName"]) == ("ec2", "EC2", "api")
    assert md["VPCID"].startswith("vpc-")
    c = md["Containers"][0]
    [net] = c["Networks"]
    assert net["NetworkMode"] == "bridge" and net["IPv4Addresses"][0].startswith("172.17.")
    assert c["Ports"] == [{"ContainerPort": 4369, "Protocol": "tcp", "HostPort": b["bindings"][0]["hostPort"],
                           "HostIp": "0.0.0.0"}]
    [h] = world.run_spec({"region": "us-east-1", "cluster": "ec2", "subnet": None, "family": "h", "count": 1,
                          "launch_type": "EC2", "network_mode": "host", "port_mappings": [{"containerPort": 9000}]})
    status, md = get(h["metadata_uri"] + "/task")
    c = md["Containers"][0]
    assert c["Networks"] == [{"NetworkMode": "host"}]
    assert c["Ports"] == [{"ContainerPort": 9000, "Protocol": "tcp", "HostPort": 9000, "HostIp": "0.0.0.0"}]
    assert "ServiceName" not in md  # not a service's task


def test_ec2_awsvpc_and_ipv6_only_metadata(emu):
    world.instances("eu-west-2", "ec2", "10.82.0.0/24", [{"ipv4": "10.82.0.10"}])
    [a] = world.run_spec({"region": "eu-west-2", "cluster": "ec2", "subnet": "10.83.0.0/24",
                          "subnet_ipv6": "fd00:83::/64", "family": "a", "count": 1, "launch_type": "EC2"})
    _, md = get(a["metadata_uri"] + "/task")
    assert (md["Cluster"], md["LaunchType"]) == ("ec2", "EC2")
    [net] = md["Containers"][0]["Networks"]
    assert (net["IPv4Addresses"], net["IPv6Addresses"], net["IPv6SubnetCIDRBlock"]) == \
        (["10.83.0.4"], ["fd00:83::4"], "fd00:83::/64")
    [six] = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": None, "subnet_ipv6": "fd00:84::/64",
                            "family": "s", "count": 1})
    _, md = get(six["metadata_uri"] + "/task")
    [net] = md["Containers"][0]["Networks"]
    assert net["IPv6Addresses"] == ["fd00:84::4"]
    assert "IPv4Addresses" not in net and "IPv4SubnetCIDRBlock" not in net


def test_metadata_follows_the_lifecycle(emu):
    emu.ok("POST", "/_emu/config", {"stop": "hold"})
    [t] = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": "10.85.0.0/24", "family": "api", "count": 1})
    world.stop_tasks("eu-west-2", "web", [t["arn"]])
    _, md = get(t["metadata_uri"] + "/task")
    assert (md["DesiredStatus"], md["KnownStatus"]) == ("STOPPED", "DEACTIVATING")
    emu.ok("POST", "/_emu/lifecycle", {"region": "eu-west-2", "cluster": "web", "tasks": [t["arn"]], "lastStatus": "STOPPED"})
    _, md = get(t["metadata_uri"] + "/task")
    assert md["KnownStatus"] == "STOPPED" and md["Containers"][0]["KnownStatus"] == "STOPPED"


def test_metadata_faults_answer_the_agents_text_until_cleared(emu):
    ts = world.run_spec({"region": "eu-west-2", "cluster": "web", "subnet": "10.86.0.0/24", "family": "api", "count": 2})
    task_id = ts[0]["arn"].rsplit("/", 1)[-1]
    emu.ok("POST", "/_emu/metadata-fault",
           {"task": task_id, "status": 400, "body": "unable to associate '172.17.0.5' with task"})
    assert get(ts[0]["metadata_uri"] + "/task") == (400, "unable to associate '172.17.0.5' with task")
    assert get(ts[1]["metadata_uri"] + "/task")[0] == 200
    emu.ok("POST", "/_emu/metadata-fault", {"task": "*", "status": 500, "body": "internal"})
    assert get(ts[1]["metadata_uri"])[0] == 500
    emu.ok("DELETE", "/_emu/metadata-fault")
    assert get(ts[0]["metadata_uri"] + "/task")[0] == 200
    assert get(f"{emu.endpoint}/v4/{'0' * 32}/task")[0] == 404
