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
