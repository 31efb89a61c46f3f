"""Container faults through the engine: kill, stop, pause, restart.

Each acts on a managed or adopted container (the same ownership rules as the
container RPCs) and is undone by putting the container back as it was:
running again after kill or stop, unpaused after pause. Restart needs no undo.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent import policy
from agent.faults.journal import Undo
from agent.runtime import DockerRuntime
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import FailedPrecondition, InvalidArgument, NotFound, ShakedownError

KINDS = (pb.FAULT_KIND_KILL, pb.FAULT_KIND_STOP, pb.FAULT_KIND_PAUSE, pb.FAULT_KIND_RESTART)
MECHANISM = "docker-engine"
FIELD = "spec.container"
_UNDO = {pb.FAULT_KIND_KILL: "start", pb.FAULT_KIND_STOP: "start",
         pb.FAULT_KIND_PAUSE: "unpause", pb.FAULT_KIND_RESTART: "none"}


@dataclass
class Plan:
    kind: pb.FaultKind.ValueType
    container: pb.Container
    signal: str = ""
    grace: int | None = None

    @property
    def params(self) -> dict[str, str]:
        out = {"container": self.container.name or self.container.id}
        if self.kind == pb.FAULT_KIND_KILL:
            out["signal"] = self.signal
        if self.grace is not None:
            out["timeout_seconds"] = str(self.grace)
        return out

    @property
    def undo(self) -> list[Undo]:
        return [Undo(_UNDO[self.kind], self.container.id)]


async def prepare(runtime: DockerRuntime, spec: pb.FaultSpec) -> Plan:
    """Validate and resolve everything before anything is journaled or applied."""
    c = spec.container
    ref = policy.container_ref(c.container, f"{FIELD}.container")
    signal = ""
    if spec.kind == pb.FAULT_KIND_KILL:
        signal = policy.parse_signal(c.signal, f"{FIELD}.signal")
    elif c.signal:
        raise InvalidArgument("only a kill fault takes a signal", field=f"{FIELD}.signal")
    grace = None
    if c.HasField("timeout_seconds"):
        if spec.kind not in (pb.FAULT_KIND_STOP, pb.FAULT_KIND_RESTART):
            raise InvalidArgument("only stop and restart faults take a timeout",
                                  field=f"{FIELD}.timeout_seconds")
        grace = policy.timeout_seconds(c.timeout_seconds, f"{FIELD}.timeout_seconds")
    try:
        container = await runtime.inspect(ref)
    except NotFound as exc:
        raise InvalidArgument(exc.reason, field=f"{FIELD}.container") from None
    # Kill, stop and pause act on a running container; their undo starts (or unpauses) it,
    # which for one already down would not be "exactly as before".
    if spec.kind in (pb.FAULT_KIND_PAUSE, pb.FAULT_KIND_KILL, pb.FAULT_KIND_STOP) \
            and container.state != pb.CONTAINER_STATE_RUNNING:
        what = {pb.FAULT_KIND_PAUSE: "pause", pb.FAULT_KIND_KILL: "kill",
                pb.FAULT_KIND_STOP: "stop"}[spec.kind]
        raise FailedPrecondition(f"container {ref!r} is not running: nothing to {what}",
                                 field=f"{FIELD}.container")
    return Plan(spec.kind, container, signal, grace)


async def apply(runtime: DockerRuntime, plan: Plan) -> None:
    cid = plan.container.id
    if plan.kind == pb.FAULT_KIND_KILL:
        await runtime.kill(cid, plan.signal)
    elif plan.kind == pb.FAULT_KIND_STOP:
        await runtime.stop(cid, plan.grace)
    elif plan.kind == pb.FAULT_KIND_PAUSE:
        await runtime.pause(cid)
    else:
        await runtime.restart(cid, plan.grace)


async def undo(runtime: DockerRuntime, step: Undo) -> str:
    """Put the container back; idempotent. Returns what was done."""
    if step.op == "none":
        return "nothing to undo"
    try:
        state = (await runtime.inspect(step.container)).state
        if step.op == "unpause":
            if state != pb.CONTAINER_STATE_PAUSED:
                return "not paused"
            await runtime.unpause(step.container)
            return "unpaused"
        if state in (pb.CONTAINER_STATE_RUNNING, pb.CONTAINER_STATE_RESTARTING):
            return "already running"
        await runtime.start(step.container)
        return "started"
    except NotFound:
        return "container gone: nothing left to undo"
    except ShakedownError as exc:
        # Ours was the stop or the pause; a container that cannot start again for reasons
        # of its own is not left frozen by us, and must not block its session's end.
        return f"could not {step.op} it: {exc}"
