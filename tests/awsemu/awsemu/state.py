"""State the emulator keeps beside moto's backends, and the one lock that guards both.

moto's backends are plain Python objects without locking; the server is threaded (werkzeug), so
every request that touches a backend or this module's state runs under LOCK. Everything here is
forgotten by `POST /moto-api/reset` (see on_reset), except the fault list, which survives a reset
as it always has (tests clear it with `DELETE /_fault`).
"""
import ipaddress
import re
import threading

from moto.core import DEFAULT_ACCOUNT_ID

LOCK = threading.RLock()
ACCOUNT = DEFAULT_ACCOUNT_ID

_reset_hooks = []


def on_reset(fn):
    """Registers fn() to run (under LOCK) when moto's state is reset; returns fn (a decorator)."""
    _reset_hooks.append(fn)
    return fn


def run_reset_hooks():
    with LOCK:
        for fn in _reset_hooks:
            fn()


def ecs(region):
    from moto.ecs.models import ecs_backends

    return ecs_backends[ACCOUNT][region]


def ec2(region):
    from moto.ec2.models import ec2_backends

    return ec2_backends[ACCOUNT][region]


def servicediscovery(region):
    from moto.servicediscovery.models import servicediscovery_backends

    return servicediscovery_backends[ACCOUNT][region]


_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/([^/]+)/")


def request_region(environ):
    """The region of a SigV4-signed request (its credential scope), or None when unsigned."""
    m = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return m.group(1) if m else None


def request_caller(environ):
    """The address the request came from, as the test beds name their hosts: REMOTE_ADDR, with
    an IPv4-mapped IPv6 address (what a dual-stack listener reports for an IPv4 client,
    `::ffff:10.201.0.4`) written as the IPv4 address it maps."""
    addr = environ.get("REMOTE_ADDR")
    try:
        mapped = ipaddress.ip_address(addr).ipv4_mapped if addr and ":" in addr else None
    except ValueError:
        mapped = None
    return str(mapped) if mapped else addr


class EmuError(Exception):
    """A bad request to one of the emulator's own control endpoints (answered with HTTP 400)."""
