"""The awsemu server: moto's server app behind a small WSGI front that serves the emulator's own
endpoints (faults, lifecycle control, task metadata) and installs the patches.

Run: tests/awsemu/run -H 127.0.0.1 -p 5000   (README.md in tests/awsemu lists every endpoint)
"""
import argparse
import json
import signal
import sys
import urllib.parse

from moto.moto_api._internal.models import MotoAPIBackend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

from . import calls, cloudmap, ec2_instances, ecs_lifecycle, ecs_tasks, faults, metadata, regions, state

assert ec2_instances  # imported for its patches of moto's EC2 addresses

_stock_reset = MotoAPIBackend.reset


def _reset(self):
    _stock_reset(self)
    state.run_reset_hooks()


def install():
    MotoAPIBackend.reset = _reset
    ecs_tasks.install()
    cloudmap.install()


def _read_json(environ):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(n) if n else b""
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise state.EmuError(f"{environ.get('PATH_INFO')}: body is not JSON ({e})")
    if not isinstance(body, dict):
        raise state.EmuError(f"{environ.get('PATH_INFO')}: expected a JSON object")
    return body


def _tasks_of(body, path):
    """The EmuTasks a control request names ({"region", "cluster", "tasks": [ARN or id...]})."""
    for key in ("region", "cluster", "tasks"):
        if key not in body:
            raise state.EmuError(f"{path}: missing \"{key}\"")
    if not isinstance(body["tasks"], list):
        raise state.EmuError(f"{path}: \"tasks\" must be a list of task ARNs or ids")
    out, missing = [], []
    for ref in body["tasks"]:
        task = ecs_tasks.find(str(ref).split("/")[-1])
        if task is None or task.region != body["region"] or task.cluster_name != body["cluster"].split("/")[-1]:
            missing.append(ref)
        else:
            out.append(task)
    if missing:
        raise state.EmuError(f"{path}: no such task in {body['region']}/{body['cluster']}: {missing}")
    return out


def _summary(tasks):
    return {"tasks": [{"taskArn": t.task_arn, "lastStatus": t.last_status, "desiredStatus": t.desired_status,
                       "healthStatus": t.health_status} for t in tasks]}


def control(environ):
    """/_emu/* endpoints: returns (status, headers, body)."""
    path = environ.get("PATH_INFO", "")
    method = environ["REQUEST_METHOD"]
    with state.LOCK:
        ecs_lifecycle.tick()
        if path == "/_emu/config":
            out = ecs_lifecycle.set_config(_read_json(environ)) if method == "POST" else dict(ecs_lifecycle.CONFIG)
        elif path == "/_emu/lifecycle" and method == "POST":
            body = _read_json(environ)
            tasks = _tasks_of(body, path)
            status = body.get("lastStatus")
            for t in tasks:
                ecs_lifecycle.set_status(t, status, body.get("stopCode"), body.get("stoppedReason"))
            out = _summary(tasks)
        elif path == "/_emu/tasks" and method == "POST":
            body = _read_json(environ)
            tasks = _tasks_of(body, path)
            health = body.get("healthStatus")
            if health is not None and health not in ("HEALTHY", "UNHEALTHY", "UNKNOWN"):
                raise state.EmuError(f"/_emu/tasks: healthStatus {health!r}; expected HEALTHY, UNHEALTHY or UNKNOWN")
            for t in tasks:
                if health is not None:
                    t.health_status = health
                    for c in t.containers:
                        c.health_status = health
                    t.version += 1
                if body.get("serviceConnect"):
                    t.add_service_connect()
            out = _summary(tasks)
        elif path == "/_emu/metadata-fault" and method == "POST":
            out = metadata.set_fault(_read_json(environ))
        elif path == "/_emu/metadata-fault" and method == "DELETE":
            metadata.clear_faults()
            out = {}
        elif path == "/_emu/cloudmap-health" and method == "POST":
            out = cloudmap.set_health(_read_json(environ))
        elif path == "/_emu/regions" and method == "GET":
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            out = {"Regions": regions.listing(query.get("partition", [None])[0])}
        elif path == "/_emu/regions" and method == "POST":
            out = regions.set_status(_read_json(environ))
        elif path == "/_emu/cloudmap-share" and method == "POST":
            out = cloudmap.share(_read_json(environ))
        else:
            return 404, [("Content-Type", "text/plain")], f"awsemu: no control endpoint {method} {path}"
    return 200, [("Content-Type", "application/json")], json.dumps(out)


class App:
    def __init__(self):
        self.moto = DomainDispatcherApplication(create_backend_app)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        try:
            if path == "/_fault":
                return self._answer(start_response, *faults.handle_control(environ))
            if path == "/_emu/calls":
                return self._answer(start_response, 200, [("Content-Type", "application/json")],
                                    json.dumps(calls.handle_control(environ)))
            if path.startswith("/_emu/"):
                return self._answer(start_response, *control(environ))
            if path.startswith("/v4/"):
                return self._answer(start_response, *metadata.handle(environ))
        except state.EmuError as e:
            return self._answer(start_response, 400, [("Content-Type", "text/plain")], str(e))
        calls.record(environ)
        refused = regions.refusal(environ)
        if refused:
            return faults.apply(refused, start_response)
        fault = faults.match(environ)
        if fault:
            answered = faults.apply(fault, start_response)
            if answered is not None:
                return answered
        answered = regions.describe_regions(environ, start_response)
        if answered is not None:
            return answered
        with state.LOCK:
            try:
                return self.moto(environ, start_response)
            except state.EmuError as e:
                return self._answer(start_response, 400, [("Content-Type", "application/x-amz-json-1.1")],
                                    json.dumps({"__type": "InvalidParameterException", "message": str(e)}))

    @staticmethod
    def _answer(start_response, status, headers, body):
        start_response(faults.status_line(status), headers)
        return [body.encode() if isinstance(body, str) else body]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tests/awsemu/run", description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, default=5000, help="port to listen on (default 5000)")
    args = parser.parse_args(argv)
    install()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = App()
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
