"""The ECS task lifecycle: lastStatus, desiredStatus and the timestamps AWS sets on the way.

https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle-explanation.html:
  PROVISIONING -> PENDING -> ACTIVATING -> RUNNING -> DEACTIVATING -> STOPPING -> DEPROVISIONING -> STOPPED
- PROVISIONING: steps before launch, e.g. the ENI of an awsvpc task is provisioned.
- PENDING: the agent is pulling images / starting containers.
- ACTIVATING: steps after launch before RUNNING (AWS names service discovery registration and
  multiple ELB target group registration as examples).
- DEACTIVATING: steps before the task stops (ELB target group deregistration as the example).
- STOPPING: the agent stops the containers (SIGTERM, then SIGKILL after the stop timeout).
- DEPROVISIONING: steps after the containers stopped, e.g. the awsvpc ENI is detached and deleted.
desiredStatus is RUNNING until the task is told to stop (StopTask, the scheduler, or an exit of an
essential container), then STOPPED; ListTasks filters on desiredStatus, so a stopping task is
listed under STOPPED at once.

Which tasks really pass through ACTIVATING and DEACTIVATING is not documented beyond those
examples. awsemu never enters them on its own except where the control API asks for it: a held
StopTask (config stop=hold) leaves an awsvpc task DEACTIVATING and any other task STOPPING, as
agreed for the test bed; tests may set any state with `POST /_emu/lifecycle`.

Timestamps (Task shape of the ECS API): pullStartedAt on PENDING, pullStoppedAt and startedAt on
RUNNING, stoppingAt when the stop begins, executionStoppedAt when the containers have stopped
(DEPROVISIONING or STOPPED), stoppedAt on STOPPED. `version` goes up on every change.
"""
import time

from . import state

STATES = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING",
          "DEPROVISIONING", "STOPPED"]
_RUNNING = STATES.index("RUNNING")

DEFAULT_CONFIG = {"stop": "immediate", "stop_hold_s": None, "start": "immediate"}
CONFIG = dict(DEFAULT_CONFIG)
_held = {}  # id(task) -> (task, deadline or None): stops held by config stop=hold


@state.on_reset
def _reset():
    CONFIG.clear()
    CONFIG.update(DEFAULT_CONFIG)
    _held.clear()


def now():
    # A datetime: moto's serializer turns it into the epoch seconds the awsJson protocol wants.
    from moto.core.utils import utcnow

    return utcnow()


def set_config(body):
    """Merges body into CONFIG after checking it; returns the new config."""
    unknown = set(body) - set(DEFAULT_CONFIG)
    if unknown:
        raise state.EmuError(f"/_emu/config: unknown keys {sorted(unknown)}; expected {sorted(DEFAULT_CONFIG)}")
    if body.get("stop", "immediate") not in ("immediate", "hold"):
        raise state.EmuError(f"/_emu/config: stop={body['stop']!r}; expected \"immediate\" or \"hold\"")
    if body.get("start", "immediate") not in ("immediate", "hold"):
        raise state.EmuError(f"/_emu/config: start={body['start']!r}; expected \"immediate\" or \"hold\"")
    hold = body.get("stop_hold_s")
    if hold is not None and (not isinstance(hold, (int, float)) or hold < 0):
        raise state.EmuError(f"/_emu/config: stop_hold_s={hold!r}; expected a number of seconds >= 0 or null")
    with state.LOCK:
        CONFIG.update(body)
        return dict(CONFIG)


def set_status(task, status, stop_code=None, reason=None):
    """Moves task to lastStatus `status`, setting desiredStatus and timestamps as AWS does."""
    if status not in STATES:
        raise state.EmuError(f"lastStatus {status!r} is not an ECS task state; expected one of {STATES}")
    t = now()
    i = STATES.index(status)
    if i <= _RUNNING:
        task.desired_status = "RUNNING"
    elif task.desired_status != "STOPPED":
        # A stop that StopTask did not start: as when an essential container exits.
        task.desired_status = "STOPPED"
        task.stop_code = stop_code or "EssentialContainerExited"
        task.stopped_reason = reason or "Essential container in task exited"
    if stop_code:
        task.stop_code = stop_code
    if reason is not None:
        task.stopped_reason = reason
    if i > _RUNNING and task.stopping_at is None:
        task.stopping_at = t
    if i >= STATES.index("PENDING") and task.pull_started_at is None:
        task.pull_started_at = t
    if i >= _RUNNING and task.pull_stopped_at is None:
        task.pull_stopped_at = t
    if i >= _RUNNING and task.started_at is None and i <= STATES.index("STOPPING"):
        task.started_at = t
    if i >= STATES.index("DEPROVISIONING") and task.execution_stopped_at is None:
        task.execution_stopped_at = t
    if status == "STOPPED" and task.stopped_at is None:
        task.stopped_at = t
    task.last_status = status
    task.version += 1
    task.on_status_change()
    if i <= _RUNNING or status == "STOPPED":
        _held.pop(id(task), None)


def start_status():
    """lastStatus of a task RunTask has just made: RUNNING, or PROVISIONING with start=hold."""
    return "PROVISIONING" if CONFIG.get("start") == "hold" else "RUNNING"


def stop(task, reason):
    """StopTask: at once to STOPPED, or (stop=hold) to DEACTIVATING (awsvpc) / STOPPING until a
    test advances it or stop_hold_s passes. A task already stopping keeps its state."""
    if task.desired_status == "STOPPED":
        return
    task.desired_status = "STOPPED"
    task.stop_code = "UserInitiated"
    # Without a reason AWS fills in a text of its own; its exact wording is not documented.
    task.stopped_reason = reason if reason is not None else "Task stopped by user"
    if CONFIG.get("stop") == "hold":
        set_status(task, "DEACTIVATING" if task.network_mode == "awsvpc" else "STOPPING")
        hold = CONFIG.get("stop_hold_s")
        _held[id(task)] = (task, time.monotonic() + hold if hold is not None else None)
    else:
        set_status(task, "STOPPED")


def tick():
    """Stops the held tasks whose stop_hold_s has passed (called before every ECS answer)."""
    if not _held:
        return
    t = time.monotonic()
    with state.LOCK:
        for task, deadline in list(_held.values()):
            if deadline is not None and t >= deadline:
                set_status(task, "STOPPED")
