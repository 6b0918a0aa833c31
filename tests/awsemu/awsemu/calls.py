"""The emulator's own log of AWS calls: who called what, where, when (`/_emu/calls`).

Every AWS request (not the emulator's control endpoints, not the task metadata endpoint) is
recorded before faults are applied, so a throttled, stalled or failed call counts as much as one
moto answered: what a test bed needs to count calls per client (each node of the network-namespace
bed has its own address) instead of trusting the clients' own counters.

    GET /_emu/calls[?since=UNIX_SECONDS]   {"now": t, "calls": [[t, client, operation, region], ...]}
    DELETE /_emu/calls                     clears the log

`t` is the server's unix time in seconds (float) when the request arrived; `client` the peer
address of the connection (REMOTE_ADDR, an IPv4-mapped address as its IPv4 address); `operation` as `/_fault` names it (X-Amz-Target's
operation, or EC2's Action); `region` the SigV4 credential scope's (None when unsigned). The log
keeps the last 500,000 calls.
"""
import collections
import time
import urllib.parse

from .faults import request_operation
from .state import LOCK, EmuError, request_caller, request_region

_log = collections.deque(maxlen=500_000)


def record(environ):
    """Appends this AWS request to the log."""
    op, _ = request_operation(environ)
    entry = [time.time(), request_caller(environ), op, request_region(environ)]
    with LOCK:
        _log.append(entry)


def handle_control(environ):
    """The /_emu/calls endpoint: returns (status, headers, body as an object)."""
    method = environ["REQUEST_METHOD"]
    if method == "DELETE":
        with LOCK:
            _log.clear()
        return {}
    if method != "GET":
        raise EmuError(f"/_emu/calls: {method} is not supported; use GET (list) or DELETE (clear)")
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    since = 0.0
    if "since" in query:
        try:
            since = float(query["since"][0])
        except ValueError:
            raise EmuError(f"/_emu/calls: since={query['since'][0]!r} is not a unix time in seconds (e.g. 1764457200.5)")
    with LOCK:
        calls = [c for c in _log if c[0] >= since]
    return {"now": time.time(), "calls": calls}
