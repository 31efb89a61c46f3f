"""Shakedown's driver: the typed client of node agents, for test authors.

    from driver import AgentClient, ContainerSpec, load_inventory

    with AgentClient.from_certs_dir("127.0.0.1:7701", "certs", "certs/keys.json") as agent:
        with agent.open_session(ttl=30) as session:
            c = session.run(ContainerSpec("busybox", ["sleep", "60"], labels={"test": "x"}))
            print(agent.exec(c, ["echo", "hi"]).output)

Errors are the ``shakedown.errors`` types, re-exported here.
"""

# Imported lazily (PEP 562): `import driver.cli` must not pay for grpc, the stubs
# and cryptography, so `shakedown --help` stays fast. Type checkers see the imports.
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driver.client import AgentClient, LogStream, Stream
    from driver.fanout import FanOutTimeout, Result, Results, fan_out
    from driver.inventory import (
        Inventory,
        InventoryError,
        NodeConfig,
        load_inventory,
        write_inventory,
    )
    from driver.session import SessionHandle
    from driver.signer import SigningInterceptor
    from driver.types import (
        Capability,
        Container,
        ContainerSpec,
        Event,
        ExecResult,
        LogChunk,
        LogLine,
        Mount,
        Network,
        NodeInfo,
        Policy,
        PortMapping,
        Session,
        log_lines,
        parse_size,
    )
    from shakedown.errors import (
        AlreadyExists,
        AuthError,
        DeadlineExceeded,
        FailedPrecondition,
        InvalidArgument,
        NotFound,
        PolicyError,
        ShakedownError,
        Unavailable,
    )

_HOMES = {
    "driver.client": ("AgentClient", "LogStream", "Stream"),
    "driver.fanout": ("FanOutTimeout", "Result", "Results", "fan_out"),
    "driver.inventory": ("Inventory", "InventoryError", "NodeConfig", "load_inventory",
                         "write_inventory"),
    "driver.session": ("SessionHandle",),
    "driver.signer": ("SigningInterceptor",),
    "driver.types": ("Capability", "Container", "ContainerSpec", "Event", "ExecResult",
                     "LogChunk", "LogLine", "Mount", "Network", "NodeInfo", "Policy",
                     "PortMapping", "Session", "log_lines", "parse_size"),
    "shakedown.errors": ("AlreadyExists", "AuthError", "DeadlineExceeded", "FailedPrecondition",
                         "InvalidArgument", "NotFound", "PolicyError", "ShakedownError",
                         "Unavailable"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'driver' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AgentClient", "AlreadyExists", "AuthError", "Capability", "Container", "ContainerSpec",
    "DeadlineExceeded", "Event", "ExecResult", "FailedPrecondition", "FanOutTimeout",
    "InvalidArgument", "Inventory", "InventoryError", "LogChunk", "LogLine", "LogStream",
    "Mount", "Network", "NodeConfig", "NodeInfo", "NotFound", "Policy", "PolicyError",
    "PortMapping", "Result", "Results", "Session", "SessionHandle", "ShakedownError",
    "SigningInterceptor", "Stream", "Unavailable", "fan_out", "load_inventory", "log_lines",
    "parse_size", "write_inventory",
]
