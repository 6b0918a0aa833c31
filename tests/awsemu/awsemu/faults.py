"""Fault injection per AWS operation and region: `/_fault` (POST adds, GET lists with hit counts,
DELETE clears).

An entry is a JSON object (POST takes one or a list):
  {"operation": "ListTasks" | "*", "region": "eu-west-2" (absent: any region), "count": 1,
   "status": 400, "code": "ThrottlingException", "message": "Rate exceeded",
   "delay_ms": 0, "raw_body": null}
A request matches the first entry with count > 0 whose operation is "*" or the request's operation,
whose region (if given) is the request's SigV4 scope region, and whose "caller" (if given: an IP
address, as `/_emu/calls` logs it) is the address the request came from (one task's credentials
or IAM role refused, the others' accepted). The entry's count goes down by
one and its "hits" up by one; the request is then delayed by delay_ms, and, if the entry has a
status, answered with that error instead of reaching moto (raw_body, when given, is sent verbatim:
a malformed answer). Without a status the request is only delayed.

Operations are named as in the AWS API: awsJson services (ECS, Cloud Map) by their X-Amz-Target
(`ListTasks`, `DescribeContainerInstances`, `DiscoverInstances`), query services (EC2) by their
`Action` (`DescribeInstances`). The error body follows the service's protocol: awsJson
`{"__type", "message"}`, EC2's XML `<Response><Errors><Error>`.
"""
import io
import json
import time
import urllib.parse
import uuid

from .state import LOCK, request_caller, request_region

_faults = []

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}


def status_line(status):
    return f"{status} {_REASONS.get(status, 'OK' if status < 300 else 'Error')}"


def request_operation(environ):
    """(operation, protocol) of an AWS request: protocol is "json" or "query"."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1], "json"
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in query:
        return query["Action"][0], "query"
    ctype = environ.get("CONTENT_TYPE", "")
    if environ.get("REQUEST_METHOD") == "POST" and "x-www-form-urlencoded" in ctype:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n)
        environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if "Action" in form:
            return form["Action"][0], "query"
    return None, None


def handle_control(environ):
    """The /_fault endpoint: returns (status, headers, body)."""
    method = environ["REQUEST_METHOD"]
    with LOCK:
        if method == "POST":
            n = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                body = json.loads(environ["wsgi.input"].read(n) or b"{}")
            except ValueError as e:
                return 400, [("Content-Type", "text/plain")], f"/_fault: body is not JSON ({e})"
            entries = body if isinstance(body, list) else [body]
            if not all(isinstance(e, dict) for e in entries):
                return 400, [("Content-Type", "text/plain")], "/_fault: expected an object or a list of objects"
            _faults.extend(entries)
        elif method == "DELETE":
            _faults.clear()
        out = json.dumps(_faults)
    return 200, [("Content-Type", "application/json")], out


def match(environ):
    """The fault entry (a copy) that this AWS request consumes, or None."""
    with LOCK:
        if not _faults:
            return None
    op, protocol = request_operation(environ)
    region = request_region(environ)
    caller = request_caller(environ)
    with LOCK:
        for f in _faults:
            if (f.get("count", 1) > 0 and f.get("operation", "*") in ("*", op)
                    and f.get("region", region) == region and f.get("caller", caller) == caller):
                f["count"] = f.get("count", 1) - 1
                f["hits"] = f.get("hits", 0) + 1
                hit = dict(f)
                hit["_protocol"] = protocol
                return hit
    return None


def apply(fault, start_response):
    """Delays per the fault; returns the WSGI body when the fault answers, None to pass on."""
    if fault.get("delay_ms"):
        time.sleep(fault["delay_ms"] / 1000)
    if not fault.get("status"):
        return None
    status = int(fault["status"])
    code = fault.get("code", "ThrottlingException")
    message = fault.get("message", "Rate exceeded")
    request_id = str(uuid.uuid4())
    body = fault.get("raw_body")
    if fault.get("_protocol") == "query":
        if body is None:
            body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>"
                    f"<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>")
        headers = [("Content-Type", "text/xml")]
    else:
        if body is None:
            body = json.dumps({"__type": code, "message": message})
        headers = [("Content-Type", "application/x-amz-json-1.1")]
        if status >= 400:
            headers.append(("x-amzn-ErrorType", code))
    headers.append(("x-amzn-RequestId", request_id))
    start_response(status_line(status), headers)
    return [body.encode()]
