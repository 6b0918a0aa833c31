"""The emulator's self-test: one awsemu per session (started with tests/awsemu/run on a free
port), reset before every test; clients are boto3's, as AWS would be asked.

Run: .venv-awsemu/bin/python -m pytest tests/awsemu     (./scripts/test does)
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True  # no __pycache__ beside tests/support/world.py
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))

import world  # noqa: E402  (tests/support/world.py, the seeding helper under test too)

os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_EC2_METADATA_DISABLED="true",
                  AWS_DISABLE_HOST_PREFIX_INJECTION="true")
CFG = Config(retries={"total_max_attempts": 1}, inject_host_prefix=False)  # no retries: faults count calls


class Emu:
    def __init__(self, endpoint):
        self.endpoint = endpoint

    def client(self, service, region):
        return boto3.client(service, region_name=region, endpoint_url=self.endpoint, config=CFG)

    def http(self, method, path, body=None):
        """(status, parsed JSON or text) of a request to the emulator."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.endpoint + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def ok(self, method, path, body=None):
        status, out = self.http(method, path, body)
        assert status == 200, f"{method} {path}: {status} {out}"
        return out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def emu_server():
    port = _free_port()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"awsemu-selftest-{port}.log"), "w")
    proc = subprocess.Popen([os.path.join(HERE, "run"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            break
        except OSError:
            assert proc.poll() is None, f"awsemu exited with {proc.returncode}; see {log.name}"
            assert time.monotonic() < deadline, f"awsemu did not answer on {endpoint} within 60 s"
            time.sleep(0.05)
    world.ENDPOINT = endpoint
    yield Emu(endpoint)
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def emu(emu_server):
    emu_server.ok("POST", "/moto-api/reset")
    emu_server.ok("DELETE", "/_fault")
    return emu_server


def wait_for(fn, what, timeout=10.0):
    """Polls fn() until it returns a truthy value (returned), failing after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
