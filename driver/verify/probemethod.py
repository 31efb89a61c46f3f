"""Which method `verify auth` calls: one the server really serves.

Probing a method the server does not serve proves nothing: grpc-go (and
grpcio) answer UNIMPLEMENTED for an unknown service before any interceptor
runs, so an allow-list never gets asked. In order: the method named with
--method; on a Shakedown agent, GetNodeInfo (signed) or, without a keyring,
its health service; else a unary method found through server reflection
whose request may be empty, checked with the valid identity; the health
service only when it is served.

Reflection is asked with the valid identity. Auto-discovery never calls a
method whose name reads as a change (Delete..., Create..., Set...): the probe
sends it an empty request once per case, and must have no side effect.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, json_format

from driver.dynamic.descriptors import Descriptors
from driver.dynamic.reflection import Reflection
from driver.verify.verdicts import ACCEPTED, REJECTED, Observation
from shakedown.errors import ShakedownError

AGENT_SERVICE = "shakedown.agent.v1.Agent"
AGENT_PROBE = f"/{AGENT_SERVICE}/GetNodeInfo"
HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_PROBE = f"/{HEALTH_SERVICE}/Check"
# Infrastructure, not the application: often outside its interceptors.
SKIP_SERVICES = ("grpc.reflection.", "grpc.health.", "grpc.channelz.")
METHOD_RE = re.compile(r"^/?([A-Za-z_][A-Za-z0-9_.]*)/([A-Za-z_][A-Za-z0-9_]*)$")
_READ = "get list describe check ping status info version echo empty health read fetch lookup"
READ_VERBS = frozenset(f"{_READ} query search stat show count exists whoami".split(" "))
_WRITE = (
    "delete remove destroy drop kill stop shutdown terminate reset purge clear revoke cancel "
    "abort evict restart reboot wipe truncate flush update set put create write send publish "
    "apply patch insert add register unregister execute exec run start trigger rotate rollback "
    "migrate upload import move rename grant deny approve commit"
)
WRITE_VERBS = frozenset(_WRITE.split(" "))
MAX_TRIES = 5  # candidates checked with the valid identity before giving up


@dataclass(frozen=True, slots=True)
class ProbeMethod:
    method: str  # /pkg.Svc/Method
    body: bytes
    source: str  # --method | agent | reflection | health | fallback
    note: str  # one line: why this method
    request: dict[str, Any] = field(default_factory=dict)  # as sent, JSON form
    services: tuple[str, ...] | None = None  # what reflection listed; None: no reflection
    agent: bool = False  # the Shakedown agent service is served


# (method, body) -> what the valid identity gets; signs when a keyring is given.
ValidCall = Callable[[str, bytes], Observation]


def normalize(method: str) -> str:
    """``/pkg.Svc/Method`` (the leading slash may be left out)."""
    m = METHOD_RE.match(method.strip())
    if not m:
        raise ValueError(f"--method {method!r}: want /package.Service/Method")
    return f"/{m.group(1)}/{m.group(2)}"


def _verb(name: str) -> str:
    m = re.match(r"[A-Z]?[a-z]+", name)
    return m.group(0).lower() if m else name.lower()


def _empty_able(msg: descriptor.Descriptor) -> bool:
    return not any(f.is_required for f in msg.fields)


def rank(methods: list[descriptor.MethodDescriptor]) -> list[descriptor.MethodDescriptor]:
    """Unary, empty-able, not change-sounding methods, the safest and emptiest first."""
    no_side_effects = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    usable = [
        m
        for m in methods
        if not m.client_streaming
        and not m.server_streaming
        and _empty_able(m.input_type)
        and _verb(m.name) not in WRITE_VERBS
    ]

    def key(m: descriptor.MethodDescriptor) -> tuple[bool, bool, bool, str]:
        opts = m.GetOptions()
        declared = opts.HasField("idempotency_level") and opts.idempotency_level == no_side_effects
        empty = m.input_type.full_name == "google.protobuf.Empty" or not m.input_type.fields
        return (not declared, not empty, _verb(m.name) not in READ_VERBS, m.full_name)

    return sorted(usable, key=key)


def _full(m: descriptor.MethodDescriptor) -> str:
    return f"/{m.containing_service.full_name}/{m.name}"


def choose(
    channel: grpc.Channel,
    valid: ValidCall,
    *,
    method: str | None = None,
    data: Mapping[str, Any] | None = None,
    signed: bool = False,
    timeout: float = 5.0,
) -> ProbeMethod:
    """Pick the probe. ``channel`` carries the valid identity (for reflection)."""
    if data is not None and method is None:
        raise ValueError("--data: needs --method (the method whose request it is)")
    reflection = Reflection(channel, timeout=timeout)
    descs = Descriptors(reflection)
    services: tuple[str, ...] | None
    try:
        services = tuple(reflection.services())
    except ShakedownError:
        services = None  # not served, or not to us: the fallbacks below decide
    agent = services is not None and AGENT_SERVICE in services
    if services is None and signed:
        # No reflection: an agent anyway? Only one gets a valid signed GetNodeInfo through.
        agent = valid(AGENT_PROBE, b"").result == ACCEPTED

    def made(name: str, body: bytes, source: str, note: str, req: dict[str, Any]) -> ProbeMethod:
        return ProbeMethod(name, body, source, note, req, services, agent)

    if method is not None:
        name = normalize(method)
        body, req, note = _request(descs, name, data)
        return made(name, body, "--method", note, req)
    if agent and signed:
        return made(AGENT_PROBE, b"", "agent", "a Shakedown agent, signed read-only call", {})
    if agent:
        return made(
            HEALTH_PROBE, b"", "health", "a Shakedown agent without --keys, its health service", {}
        )
    tried: list[str] = []
    if services is not None:
        for m in _candidates(descs, services)[:MAX_TRIES]:
            got = valid(_full(m), b"")
            if got.result == ACCEPTED:
                return made(
                    _full(m),
                    b"",
                    "reflection",
                    f"found through reflection, empty {m.input_type.full_name} request",
                    {},
                )
            tried.append(f"{_full(m)} ({got.code})")
    if services is not None and HEALTH_SERVICE in services:
        return made(HEALTH_PROBE, b"", "health", "the served health service" + _tried(tried), {})
    if services is None and valid(HEALTH_PROBE, b"").result in (ACCEPTED, REJECTED):
        return made(HEALTH_PROBE, b"", "health", "no reflection, health is served", {})
    what = "no reflection" if services is None else "no usable method"
    return made(
        HEALTH_PROBE,
        b"",
        "fallback",
        f"{what}{_tried(tried)} and no health service: name one with --method",
        {},
    )


def _tried(tried: list[str]) -> str:
    return f" (tried {', '.join(tried)})" if tried else ""


def _candidates(descs: Descriptors, services: tuple[str, ...]) -> list[descriptor.MethodDescriptor]:
    methods: list[descriptor.MethodDescriptor] = []
    for name in services:
        if name.startswith(SKIP_SERVICES) or name == AGENT_SERVICE:
            continue
        try:
            methods += list(descs.service(name).methods)
        except (ShakedownError, KeyError, TypeError):
            continue  # a service whose descriptors do not load is not one to probe
    return rank(methods)


def _request(
    descs: Descriptors, name: str, data: Mapping[str, Any] | None
) -> tuple[bytes, dict[str, Any], str]:
    """The serialized request for --method/--data, built from the server's descriptors."""
    svc, _, meth = name[1:].rpartition("/")
    try:
        m = descs.service(svc).methods_by_name.get(meth)
    except (ShakedownError, KeyError, TypeError):
        m = None
    if m is None:
        if data:
            raise ValueError(
                f"--data: cannot build a request for --method {name}: reflection does not "
                "describe it"
            )
        return b"", {}, "named with --method, not described by reflection: empty request"
    if m.client_streaming or m.server_streaming:
        raise ValueError(f"--method {name}: a streaming method; name a unary one")
    msg = descs.message_class(m.input_type)()
    try:
        json_format.ParseDict(dict(data or {}), msg, descriptor_pool=descs.pool)
    except json_format.ParseError as exc:
        raise ValueError(f"--data: {m.input_type.full_name}: {exc}") from None
    req = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return msg.SerializeToString(), req, f"named with --method, {m.input_type.full_name} request"
