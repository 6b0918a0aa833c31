"""The account's regions, per partition, with their opt-in status, and the refusal of every call
to a region the account has not enabled.

AWS keeps, per account, each region's status as account:ListRegions reports it
(`RegionOptStatus`: ENABLED_BY_DEFAULT, ENABLED, ENABLING, DISABLING, DISABLED;
https://docs.aws.amazon.com/accounts/latest/reference/API_ListRegions.html). Regions launched
since March 2019 are opt-in (OPT_IN below, from AWS's list of regions "disabled by default",
https://docs.aws.amazon.com/accounts/latest/reference/manage-acct-regions.html); every other
region, and every region of the other partitions, is ENABLED_BY_DEFAULT.

A call signed for a region that is not enabled (DISABLED, ENABLING or DISABLING) does not reach
the service: AWS answers it as credentials it does not recognise, the same answer an opt-in
region gives to a version-1 session token of the global STS endpoint. Per protocol:
- awsJson services (ECS, Cloud Map): HTTP 400, `UnrecognizedClientException`, "The security
  token included in the request is invalid." (the answer field reports show for ECS, Lambda,
  DynamoDB and Cloud Map in a region not enabled);
- EC2 (query): HTTP 401, `AuthFailure`, "AWS was not able to validate the provided access
  credentials" (assumed: EC2's answer for credentials it does not recognise).

The emulator's account has opted in to every opt-in region (ENABLED), so a test uses any region
unless it disables one: `POST /_emu/regions {"region": "ap-east-1", "opt_status": "DISABLED"}`.
`GET /_emu/regions[?partition=aws]` lists the regions known (botocore's endpoint data, the SDKs'
partition table) with their partition and status, in the shape of account:ListRegions' `Regions`
(`RegionName`, `RegionOptStatus`) plus `Partition`: what account:ListRegions and
ec2:DescribeRegions answer from, per partition. `POST /moto-api/reset` forgets every change.
"""
import botocore.loaders

from . import faults, state

OPT_IN = frozenset({
    "af-south-1", "ap-east-1", "ap-east-2", "ap-south-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "ap-southeast-6", "ap-southeast-7", "ca-west-1", "eu-central-2", "eu-south-1",
    "eu-south-2", "il-central-1", "me-central-1", "me-south-1", "mx-central-1",
})
STATUSES = ("ENABLED_BY_DEFAULT", "ENABLED", "ENABLING", "DISABLING", "DISABLED")
SERVED = ("ENABLED_BY_DEFAULT", "ENABLED")

_status = {}  # region -> status set by a test (absent: the default)
_partitions = None  # [(partition id, [region...])], botocore's endpoint data, loaded once


@state.on_reset
def _reset():
    _status.clear()


def partitions():
    """[(partition id, sorted regions)] as the SDKs' partition table lists them."""
    global _partitions
    if _partitions is None:
        data = botocore.loaders.create_loader().load_data("endpoints")
        _partitions = [(p["partition"], sorted(p["regions"])) for p in data["partitions"]]
    return _partitions


def partition_of(region):
    for pid, regions in partitions():
        if region in regions:
            return pid
    return None


def opt_status(region):
    """The account's status of region (a region the table does not know is enabled by default)."""
    with state.LOCK:
        if region in _status:
            return _status[region]
    return "ENABLED" if region in OPT_IN else "ENABLED_BY_DEFAULT"


def listing(partition=None):
    """[{"RegionName", "RegionOptStatus", "Partition"}] of every known region (of one partition)."""
    return [{"RegionName": r, "RegionOptStatus": opt_status(r), "Partition": pid}
            for pid, regions in partitions() if partition in (None, pid) for r in regions]


def set_status(body):
    region, status = body.get("region"), body.get("opt_status")
    if not isinstance(region, str) or not region:
        raise state.EmuError('/_emu/regions: missing "region"')
    if status not in STATUSES:
        raise state.EmuError(f"/_emu/regions: opt_status {status!r}; expected one of {', '.join(STATUSES)}")
    if status == "ENABLED_BY_DEFAULT" and region in OPT_IN:
        raise state.EmuError(f"/_emu/regions: {region} is an opt-in region; it is ENABLED or DISABLED, never ENABLED_BY_DEFAULT")
    if status != "ENABLED_BY_DEFAULT" and region not in OPT_IN and partition_of(region) is not None:
        raise state.EmuError(f"/_emu/regions: {region} is enabled by default and cannot be disabled")
    with state.LOCK:
        _status[region] = status
    return {"RegionName": region, "RegionOptStatus": status, "Partition": partition_of(region)}


def refusal(environ):
    """The answer (a fault entry for faults.apply) to an AWS request signed for a region the
    account has not enabled, or None when the region serves it."""
    region = state.request_region(environ)
    if region is None or opt_status(region) in SERVED:
        return None
    _, protocol = faults.request_operation(environ)
    if protocol == "query":
        return {"status": 401, "code": "AuthFailure",
                "message": "AWS was not able to validate the provided access credentials", "_protocol": protocol}
    return {"status": 400, "code": "UnrecognizedClientException",
            "message": "The security token included in the request is invalid.", "_protocol": protocol}


# ec2:DescribeRegions, as AWS answers it
# (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeRegions.html): the regions
# of the partition the request is signed for (the region the request goes to decides it), each
# with its OptInStatus; without AllRegions only the regions enabled for the account, with
# AllRegions every region of the partition; RegionName.N and Filter.N (region-name, endpoint,
# opt-in-status) narrow it. moto's answers every partition's regions at once, ignores AllRegions
# and the filters, and knows no opt-in status, so the emulator answers it here.
_OPT_IN_STATUS = {"ENABLED_BY_DEFAULT": "opt-in-not-required", "ENABLED": "opted-in"}
_FILTERS = {"region-name": "regionName", "endpoint": "regionEndpoint", "opt-in-status": "optInStatus"}


def _dns_suffix(pid):
    data = botocore.loaders.create_loader().load_data("endpoints")
    return next(p["dnsSuffix"] for p in data["partitions"] if p["partition"] == pid)


def _query_params(environ):
    """The query protocol's parameters, from the query string and a form body."""
    import io
    import urllib.parse

    params = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n)
        environ["wsgi.input"] = io.BytesIO(body)
        for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items():
            params.setdefault(k, []).extend(v)
    return {k: v[0] for k, v in params.items()}


def _numbered(params, prefix):
    """[value of PREFIX.1, PREFIX.2, ...] as the query protocol numbers a list."""
    out, i = [], 1
    while f"{prefix}.{i}" in params:
        out.append(params[f"{prefix}.{i}"])
        i += 1
    return out


def describe_regions(environ, start_response):
    """The WSGI answer to an ec2:DescribeRegions request, or None for any other request."""
    from xml.sax.saxutils import escape

    op, protocol = faults.request_operation(environ)
    if (op, protocol) != ("DescribeRegions", "query"):
        return None
    params = _query_params(environ)
    region = state.request_region(environ) or "us-east-1"
    pid = partition_of(region) or "aws"
    suffix = _dns_suffix(pid)
    all_regions = params.get("AllRegions", "false").lower() == "true"
    names = set(_numbered(params, "RegionName"))
    filters = []
    i = 1
    while f"Filter.{i}.Name" in params:
        filters.append((params[f"Filter.{i}.Name"], set(_numbered(params, f"Filter.{i}.Value"))))
        i += 1
    unknown = [n for n, _ in filters if n not in _FILTERS]
    if unknown:
        return faults.apply({"status": 400, "code": "InvalidParameterValue",
                             "message": f"The filter '{unknown[0]}' is invalid", "_protocol": "query"},
                            start_response)
    items = []
    for r in dict(partitions())[pid]:
        status = opt_status(r)
        info = {"regionName": r, "regionEndpoint": f"ec2.{r}.{suffix}",
                "optInStatus": _OPT_IN_STATUS.get(status, "not-opted-in")}
        if not all_regions and status not in SERVED:
            continue
        if names and r not in names:
            continue
        if any(info[_FILTERS[n]] not in values for n, values in filters):
            continue
        items.append(info)
    body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<DescribeRegionsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
            "<requestId>00000000-0000-4000-8000-000000000000</requestId><regionInfo>"
            + "".join("<item>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in i.items()) + "</item>"
                      for i in items)
            + "</regionInfo></DescribeRegionsResponse>")
    start_response(faults.status_line(200), [("Content-Type", "text/xml")])
    return [body.encode()]
