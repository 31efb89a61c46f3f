"""The fault RPCs on an ``AgentClient`` (kept apart from driver/client.py).

The methods are registered on the client's signed channel the first time they
are used. InjectFault is never retried (a lost answer would inject twice);
list, heal and update_toxics are safe to repeat (healing a healed fault returns
it again; update_toxics sends the full state).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from driver.client import SERVICE, AgentClient, _sid
from driver.faults.types import Fault, FaultSpec, Toxic
from shakedown.agent.v1 import agent_pb2 as pb

_RESPONSES: dict[str, type[Message]] = {
    "InjectFault": pb.Fault, "ListFaults": pb.ListFaultsResponse,
    "HealFault": pb.Fault, "HealAll": pb.HealAllResponse, "UpdateToxics": pb.Fault,
}


def _call(client: AgentClient, method: str, request: Message, timeout: float | None,
          retry: bool = False) -> Any:
    if method not in client._unary:
        client._unary[method] = client._raw_channel.unary_unary(
            f"/{SERVICE}/{method}", request_serializer=None,
            response_deserializer=_RESPONSES[method].FromString)
    return client._call(method, request, timeout, retry=retry)


def inject_fault(client: AgentClient, session: object, spec: FaultSpec, *,
                 timeout: float | None = None) -> Fault:
    """Inject ``spec`` on behalf of ``session`` (its end heals the fault). Never retried."""
    req = pb.InjectFaultRequest(session_id=_sid(session), spec=spec.to_pb())
    return Fault.from_pb(_call(client, "InjectFault", req, timeout))


def list_faults(client: AgentClient, session: object | None = None, *,
                timeout: float | None = None) -> list[Fault]:
    req = pb.ListFaultsRequest(session_id=_sid(session) if session is not None else "")
    return [Fault.from_pb(f) for f in _call(client, "ListFaults", req, timeout, True).faults]


def heal_fault(client: AgentClient, fault: str | Fault, *,
               timeout: float | None = None) -> Fault:
    fid = fault.id if isinstance(fault, Fault) else fault
    return Fault.from_pb(_call(client, "HealFault", pb.HealFaultRequest(fault_id=fid),
                               timeout, True))


def heal_all(client: AgentClient, session: object | None = None, *,
             timeout: float | None = None) -> list[Fault]:
    """Heal ``session``'s faults, or (no session) every fault on the node."""
    req = (pb.HealAllRequest(session_id=_sid(session)) if session is not None
           else pb.HealAllRequest(all=True))
    return [Fault.from_pb(f) for f in _call(client, "HealAll", req, timeout, True).healed]


def update_toxics(client: AgentClient, fault: str | Fault, toxics: Sequence[Toxic], *,
                  timeout: float | None = None) -> Fault:
    """Make ``toxics`` the live proxy's toxics (full state: ``()`` removes them all);
    they apply to its existing connections too."""
    fid = fault.id if isinstance(fault, Fault) else fault
    req = pb.UpdateToxicsRequest(fault_id=fid, toxics=[t.to_pb() for t in toxics])
    return Fault.from_pb(_call(client, "UpdateToxics", req, timeout, True))
