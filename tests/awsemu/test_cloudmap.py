"""Cloud Map: re-registering an instance updates it; health status changes and the HealthStatus
filter of DiscoverInstances."""
import botocore.exceptions
import pytest

import world

R = "ap-southeast-2"


def discover(emu, service="api", **kw):
    out = emu.client("servicediscovery", R).discover_instances(NamespaceName="internal", ServiceName=service, **kw)
    return sorted((i["InstanceId"], i["Attributes"].get("AWS_INSTANCE_IPV4"), i["HealthStatus"]) for i in out["Instances"])


def service_id(emu, name="api"):
    return [s["Id"] for s in emu.client("servicediscovery", R).list_services()["Services"] if s["Name"] == name][0]


def test_registering_an_existing_instance_id_updates_it(emu):
    world.seed({"cloudmap": [{"region": R, "namespace": "internal", "service": "api",
                              "instances": [{"id": "a", "ipv4": "10.90.0.10"}, {"id": "b", "ipv4": "10.90.0.11"}]}]})
    sd = emu.client("servicediscovery", R)
    sd.register_instance(ServiceId=service_id(emu), InstanceId="a", Attributes={"AWS_INSTANCE_IPV4": "10.90.0.20"})
    assert discover(emu) == [("a", "10.90.0.20", "HEALTHY"), ("b", "10.90.0.11", "HEALTHY")]
    assert len(sd.list_instances(ServiceId=service_id(emu))["Instances"]) == 2


def test_custom_health_changes_what_discovery_returns(emu):
    world.seed({"cloudmap": [{"region": R, "namespace": "internal", "service": "api", "health_check": "custom",
                              "instances": [{"id": "a", "ipv4": "10.90.0.10"},
                                            {"id": "b", "ipv4": "10.90.0.11", "health": "UNHEALTHY"}]}]})
    assert discover(emu, HealthStatus="HEALTHY") == [("a", "10.90.0.10", "HEALTHY")]
    assert discover(emu, HealthStatus="UNHEALTHY") == [("b", "10.90.0.11", "UNHEALTHY")]
    emu.ok("POST", "/_emu/cloudmap-health", {"region": R, "namespace": "internal", "service": "api",
                                             "instance": "a", "status": "UNHEALTHY"})
    # None healthy: HEALTHY_OR_ELSE_ALL fails open.
    assert [i[0] for i in discover(emu, HealthStatus="HEALTHY_OR_ELSE_ALL")] == ["a", "b"]
    assert discover(emu, HealthStatus="HEALTHY") == []


def test_without_a_health_check_the_health_filter_is_ignored_and_custom_updates_fail(emu):
    world.seed({"cloudmap": [{"region": R, "namespace": "internal", "service": "api",
                              "instances": [{"id": "a", "ipv4": "10.90.0.10"}]}]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        emu.client("servicediscovery", R).update_instance_custom_health_status(
            ServiceId=service_id(emu), InstanceId="a", Status="UNHEALTHY")
    assert e.value.response["Error"]["Code"] == "CustomHealthNotFound"
    assert [i[0] for i in discover(emu, HealthStatus="UNHEALTHY")] == ["a"]
    status, msg = emu.http("POST", "/_emu/cloudmap-health", {"region": R, "namespace": "internal", "service": "api",
                                                             "instance": "a", "status": "UNHEALTHY"})
    assert status == 400 and "no health check" in msg


def raw(emu, namespace="internal", service="api", **kw):
    out = emu.client("servicediscovery", R).discover_instances(NamespaceName=namespace, ServiceName=service, **kw)
    return sorted((i["InstanceId"], i["Attributes"]) for i in out["Instances"])


def test_srv_instances_carry_the_hosts_address_and_their_own_ports(emu):
    # ECS service discovery of bridge-mode tasks: SRV records, two tasks on one host.
    world.seed({"cloudmap": [{"region": R, "namespace": "internal", "service": "api", "records": ["SRV"],
                              "instances": [{"id": "t1", "ipv4": "10.90.0.10", "port": 32768},
                                            {"id": "t2", "ipv4": "10.90.0.10", "port": 32769}]}]})
    assert raw(emu) == [("t1", {"AWS_INSTANCE_IPV4": "10.90.0.10", "AWS_INSTANCE_PORT": "32768"}),
                        ("t2", {"AWS_INSTANCE_IPV4": "10.90.0.10", "AWS_INSTANCE_PORT": "32769"})]
    sd = emu.client("servicediscovery", R)
    # An SRV record needs a port, as AWS requires.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sd.register_instance(ServiceId=service_id(emu), InstanceId="t3", Attributes={"AWS_INSTANCE_IPV4": "10.90.0.11"})
    assert e.value.response["Error"]["Code"] == "InvalidInput" and "AWS_INSTANCE_PORT" in str(e.value)


def test_instances_without_address_attributes(emu):
    # An HTTP namespace takes custom attributes only; a CNAME service takes a DNS name.
    world.seed({"cloudmap": [
        {"region": R, "namespace": "internal", "service": "api",
         "instances": [{"id": "custom", "attributes": {"stage": "blue"}}]},
        {"region": R, "namespace": "dns.internal", "service": "web", "records": ["CNAME"],
         "instances": [{"id": "cname", "attributes": {"AWS_INSTANCE_CNAME": "web.example.com"}}]}]})
    assert raw(emu) == [("custom", {"stage": "blue"})]
    assert raw(emu, "dns.internal", "web") == [("cname", {"AWS_INSTANCE_CNAME": "web.example.com"})]
    sd = emu.client("servicediscovery", R)
    web = service_id(emu, "web")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sd.register_instance(ServiceId=web, InstanceId="x", Attributes={"AWS_INSTANCE_IPV4": "10.90.0.12"})
    assert e.value.response["Error"]["Code"] == "InvalidInput" and "AWS_INSTANCE_CNAME" in str(e.value)


def test_a_shared_namespace_is_found_only_with_its_owner_account(emu):
    owner = "111122223333"
    world.seed({"cloudmap": [{"region": R, "namespace": "shared", "service": "api", "owner": owner,
                              "instances": [{"id": "a", "ipv4": "10.90.0.10"}]},
                             {"region": R, "namespace": "internal", "service": "api",
                              "instances": [{"id": "b", "ipv4": "10.90.0.11"}]}]})
    for kw in ({}, {"OwnerAccount": "444455556666"}):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            raw(emu, "shared", **kw)
        assert e.value.response["Error"]["Code"] == "NamespaceNotFound", kw
    assert [i[0] for i in raw(emu, "shared", OwnerAccount=owner)] == ["a"]
    # The namespace's ARN names its owner.
    ns = [n for n in emu.client("servicediscovery", R).list_namespaces()["Namespaces"] if n["Name"] == "shared"][0]
    assert f":{owner}:namespace/" in ns["Arn"]
    # An own namespace: found without OwnerAccount or with the caller's own, not with another.
    assert [i[0] for i in raw(emu)] == ["b"]
    assert [i[0] for i in raw(emu, OwnerAccount="123456789012")] == ["b"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        raw(emu, OwnerAccount=owner)
    assert e.value.response["Error"]["Code"] == "NamespaceNotFound"
    # Sharing is forgotten with the rest of the state.
    emu.ok("POST", "/moto-api/reset")
    status, msg = emu.http("POST", "/_emu/cloudmap-share", {"region": R, "namespace": "shared", "owner": owner})
    assert status == 400 and "no namespace" in msg
