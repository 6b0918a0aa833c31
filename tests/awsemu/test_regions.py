"""The account's regions and their opt-in status: a region the account has not enabled refuses
every call as unrecognised credentials, in each protocol's shape, while the same credentials
work in every other region; the listing per partition that account:ListRegions answers from."""
import botocore.exceptions
import pytest

import world


def refused(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]


def test_a_region_not_enabled_refuses_every_service_while_the_others_answer(emu):
    world.ensure_cluster("eu-west-2", "web")
    world.ensure_cluster("ap-east-1", "web")  # enabled: the emulator's account opted in
    emu.ok("POST", "/_emu/regions", {"region": "ap-east-1", "opt_status": "DISABLED"})
    status, err = refused(lambda: emu.client("ecs", "ap-east-1").list_tasks(cluster="web"))
    assert (status, err["Code"]) == (400, "UnrecognizedClientException")
    assert err["Message"] == "The security token included in the request is invalid."
    status, err = refused(lambda: emu.client("servicediscovery", "ap-east-1").list_namespaces())
    assert (status, err["Code"]) == (400, "UnrecognizedClientException")
    status, err = refused(lambda: emu.client("ec2", "ap-east-1").describe_instances())
    assert (status, err["Code"]) == (401, "AuthFailure")
    # The same credentials, another region: answered.
    assert emu.client("ecs", "eu-west-2").list_tasks(cluster="web")["taskArns"] == []
    # Enabled again: the region's state was kept.
    emu.ok("POST", "/_emu/regions", {"region": "ap-east-1", "opt_status": "ENABLED"})
    assert emu.client("ecs", "ap-east-1").list_tasks(cluster="web")["taskArns"] == []


@pytest.mark.parametrize("status", ["ENABLING", "DISABLING"])
def test_a_region_between_states_is_not_served(emu, status):
    emu.ok("POST", "/_emu/regions", {"region": "me-south-1", "opt_status": status})
    code, err = refused(lambda: emu.client("ecs", "me-south-1").list_clusters())
    assert (code, err["Code"]) == (400, "UnrecognizedClientException")


def test_regions_are_listed_per_partition_with_their_opt_in_status(emu):
    aws = {r["RegionName"]: r for r in emu.ok("GET", "/_emu/regions?partition=aws")["Regions"]}
    assert aws["eu-west-2"]["RegionOptStatus"] == "ENABLED_BY_DEFAULT"
    assert aws["ap-east-1"]["RegionOptStatus"] == "ENABLED"
    assert {r["Partition"] for r in aws.values()} == {"aws"}
    assert "cn-north-1" not in aws
    emu.ok("POST", "/_emu/regions", {"region": "af-south-1", "opt_status": "DISABLED"})
    every = {r["RegionName"]: r for r in emu.ok("GET", "/_emu/regions")["Regions"]}
    assert every["af-south-1"]["RegionOptStatus"] == "DISABLED"
    assert every["cn-north-1"] == {"RegionName": "cn-north-1", "RegionOptStatus": "ENABLED_BY_DEFAULT",
                                   "Partition": "aws-cn"}
    # A reset forgets it.
    emu.ok("POST", "/moto-api/reset")
    every = {r["RegionName"]: r for r in emu.ok("GET", "/_emu/regions")["Regions"]}
    assert every["af-south-1"]["RegionOptStatus"] == "ENABLED"


@pytest.mark.parametrize("body,why", [
    ({"region": "eu-west-2", "opt_status": "DISABLED"}, "enabled by default and cannot be disabled"),
    ({"region": "ap-east-1", "opt_status": "ENABLED_BY_DEFAULT"}, "opt-in region"),
    ({"region": "ap-east-1", "opt_status": "OFF"}, "expected one of"),
    ({"opt_status": "DISABLED"}, 'missing "region"'),
])
def test_impossible_region_states_are_refused(emu, body, why):
    status, out = emu.http("POST", "/_emu/regions", body)
    assert status == 400 and why in out, out


def regions_of(answer):
    return {r["RegionName"]: r["OptInStatus"] for r in answer["Regions"]}


def test_describe_regions_answers_per_partition_only_the_enabled_regions_unless_all_regions(emu):
    emu.ok("POST", "/_emu/regions", {"region": "af-south-1", "opt_status": "DISABLED"})
    emu.ok("POST", "/_emu/regions", {"region": "me-south-1", "opt_status": "ENABLING"})
    aws = {r["RegionName"] for r in emu.ok("GET", "/_emu/regions?partition=aws")["Regions"]}
    enabled = regions_of(emu.client("ec2", "eu-west-2").describe_regions())
    # Only the regions enabled for the account, of the request's partition, with their status.
    assert set(enabled) == aws - {"af-south-1", "me-south-1"}
    assert enabled["eu-west-2"] == "opt-in-not-required"
    assert enabled["ap-east-1"] == "opted-in"
    assert "cn-north-1" not in enabled
    every = regions_of(emu.client("ec2", "eu-west-2").describe_regions(AllRegions=True))
    assert set(every) == aws
    assert every["af-south-1"] == every["me-south-1"] == "not-opted-in"
    # Another partition: the region the request goes to decides.
    china = regions_of(emu.client("ec2", "cn-north-1").describe_regions(AllRegions=True))
    assert set(china) == {"cn-north-1", "cn-northwest-1"}
    assert set(china.values()) == {"opt-in-not-required"}
    answer = emu.client("ec2", "cn-north-1").describe_regions()["Regions"][0]
    assert answer["Endpoint"].endswith(".amazonaws.com.cn")


def test_describe_regions_takes_region_names_and_filters(emu):
    emu.ok("POST", "/_emu/regions", {"region": "af-south-1", "opt_status": "DISABLED"})
    ec2 = emu.client("ec2", "us-east-1")
    named = ec2.describe_regions(RegionNames=["eu-west-2", "af-south-1"], AllRegions=True)
    assert regions_of(named) == {"eu-west-2": "opt-in-not-required", "af-south-1": "not-opted-in"}
    opted_out = ec2.describe_regions(AllRegions=True,
                                     Filters=[{"Name": "opt-in-status", "Values": ["not-opted-in"]}])
    assert regions_of(opted_out) == {"af-south-1": "not-opted-in"}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_regions(Filters=[{"Name": "colour", "Values": ["blue"]}])
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_describe_regions_in_a_region_not_enabled_is_refused(emu):
    emu.ok("POST", "/_emu/regions", {"region": "ap-east-1", "opt_status": "DISABLED"})
    status, err = refused(lambda: emu.client("ec2", "ap-east-1").describe_regions())
    assert (status, err["Code"]) == (401, "AuthFailure")
