"""Validation of requests and the node's host-level refusals.

Everything a caller sends passes through here before it reaches the engine:
malformed input is INVALID_ARGUMENT (``InvalidArgument``), input that is well
formed but forbidden by the operator's policy is PERMISSION_DENIED
(``PolicyError``). Each error names the offending field. No function here
raises anything else, whatever the text it is given.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.config import PolicyConfig
from shakedown import labels as L
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import InvalidArgument, PolicyError

KIB = 1024
MIB = 1024 * KIB
MIN_MEMORY = 6 * MIB  # the engine's own floor
MAX_ARGS = 1024
MAX_ARG_BYTES = 64 * KIB
MAX_ENV = 1024
MAX_LABELS = 1024
MAX_PORTS = 1024
MAX_MOUNTS = 256
MAX_LIST = 256  # cap_add, devices, selectors
MAX_PATH = 4096
TTL_MAX = 86400
TIMEOUT_MAX = 3600

_A = re.ASCII
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", _A)
REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", _A)
SESSION_ID_RE = re.compile(r"s-[0-9a-f]{12}", _A)
USER_RE = re.compile(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?", _A)
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", _A)
VOLUME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", _A)
CAP_RE = re.compile(r"(CAP_)?[A-Z][A-Z_]*|ALL", _A)
DEVICE_RE = re.compile(r"/[^:\s]*(:/[^:\s]*)?(:[rwm]{1,3})?", _A)
# The docker image reference grammar (distribution/reference), ASCII only. As in
# the engine, the first component is a registry only when it has a "." or a ":"
# or is "localhost" (so "UPPER/case" is a malformed repository, not a registry).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = (rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+(?::[0-9]{{1,5}})?"
           rf"|{_DOMAIN_COMPONENT}:[0-9]{{1,5}}|localhost)")
DOMAIN_RE = re.compile(_DOMAIN, _A)
IMAGE_RE = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?",
    _A,
)
_BAD_KEY_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class HostLimits:
    """What the host can give a container; resource requests are checked against it."""

    cpus: int
    memory_bytes: int

    @classmethod
    def local(cls) -> HostLimits:
        try:
            import psutil

            memory = int(psutil.virtual_memory().total)
        except Exception:  # psutil missing or /proc unreadable: no upper bound
            memory = 1 << 62
        return cls(cpus=os.cpu_count() or 1, memory_bytes=memory)


# ---------------------------------------------------------------- primitives


def _invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(message, field=field)


def _check_text(value: str, field: str, *, max_bytes: int, what: str = "value") -> None:
    if "\x00" in value:
        raise _invalid(field, f"{what} must not contain NUL")
    if len(value) > max_bytes or len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise _invalid(field, f"{what} is longer than {max_bytes} bytes")


def _check_key(value: str, field: str, *, max_len: int) -> None:
    """Keys (label, env) must be plain printable text: no control or invisible characters."""
    if not value:
        raise _invalid(field, "key must not be empty")
    if len(value) > max_len:
        raise _invalid(field, f"key is longer than {max_len} characters")
    for ch in value:
        if unicodedata.category(ch) in _BAD_KEY_CATEGORIES:
            raise _invalid(field, f"key contains a control or invisible character {ch!r}")


def _match(regex: re.Pattern[str], value: str, field: str, what: str, max_len: int) -> None:
    if len(value) > max_len:
        raise _invalid(field, f"{what} is longer than {max_len} characters")
    if not regex.fullmatch(value):
        raise _invalid(field, f"{what} {_show(value)} is malformed")


def _show(value: str, limit: int = 64) -> str:
    """A safe, bounded rendering of caller text for messages (escapes control characters)."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return ascii(text)


def absolute_path(value: str, field: str) -> None:
    _check_text(value, field, max_bytes=MAX_PATH, what="path")
    if not value.startswith("/"):
        raise _invalid(field, f"path {_show(value)} must be absolute")


def check_args(args: Iterable[str], field: str) -> None:
    items = list(args)
    if len(items) > MAX_ARGS:
        raise _invalid(field, f"more than {MAX_ARGS} arguments")
    for i, arg in enumerate(items):
        _check_text(arg, f"{field}[{i}]", max_bytes=MAX_ARG_BYTES, what="argument")


# ---------------------------------------------------------------- reusable validators


def container_ref(value: str, field: str = "container") -> str:
    """A container id, id prefix or name."""
    if not value:
        raise _invalid(field, "a container id or name is required")
    _match(REF_RE, value, field, "container reference", 256)
    return value


def session_id(value: str, field: str = "session_id") -> str:
    if not value:
        raise _invalid(field, "a session id is required")
    _match(SESSION_ID_RE, value, field, "session id", 64)
    return value


def session_name(value: str, field: str = "name") -> str:
    if value:
        _match(NAME_RE, value, field, "session name", 128)
    return value


def ttl_seconds(value: int, field: str = "ttl_seconds", *, default: int = 30) -> int:
    """0 means the default; otherwise 1..86400 seconds."""
    if value == 0:
        return default
    if not 1 <= value <= TTL_MAX:
        raise _invalid(field, f"ttl must be between 1 and {TTL_MAX} seconds, got {value}")
    return value


def timeout_seconds(value: int, field: str = "timeout_seconds", *,
                    maximum: int = TIMEOUT_MAX) -> int:
    if not 0 <= value <= maximum:
        raise _invalid(field, f"timeout must be between 0 and {maximum} seconds, got {value}")
    return value


def user(value: str, field: str = "user") -> str:
    _match(USER_RE, value, field, "user", 256)
    return value


def validate_labels(
    labels: Mapping[str, str], field: str = "spec.labels", *, allow_reserved: bool = False
) -> None:
    if len(labels) > MAX_LABELS:
        raise _invalid(field, f"more than {MAX_LABELS} labels")
    for key, value in labels.items():
        where = f"{field}[{_show(key)}]".replace("'", '"')
        _check_key(key, where, max_len=256)
        if not allow_reserved and L.is_reserved(key):
            raise _invalid(where, f"label keys under {L.PREFIX!r} are reserved for the agent")
        _check_text(value, where, max_bytes=4096)


def parse_selector(items: Iterable[str],
                   field: str = "label_selector") -> list[tuple[str, str | None]]:
    """Each item is "key" (the label exists) or "key=value"."""
    out: list[tuple[str, str | None]] = []
    entries = list(items)
    if len(entries) > MAX_LIST:
        raise _invalid(field, f"more than {MAX_LIST} selectors")
    for i, item in enumerate(entries):
        where = f"{field}[{i}]"
        key, sep, value = item.partition("=")
        _check_key(key, where, max_len=256)
        _check_text(value, where, max_bytes=4096)
        out.append((key, value if sep else None))
    return out


_RT = re.compile(r"RTM(IN|AX)(?:([+-])(\d{1,2}))?", _A)
_RT_SPAN = 30  # SIGRTMIN (34) .. SIGRTMAX (64) on Linux: offsets beyond it name no signal


def parse_signal(value: str, field: str = "signal", *, default: str = "SIGKILL") -> str:
    """"KILL", "SIGTERM", "9", "SIGRTMIN+3" → the engine's spelling ("SIGKILL", "9", ...)."""
    if not value:
        return default
    if len(value) > 32:
        raise _invalid(field, "signal name is too long")
    if value.isascii() and value.isdigit():
        number = int(value)
        if not 1 <= number <= 64:
            raise _invalid(field, f"signal number {number} is out of range 1..64")
        return str(number)
    name = value.upper() if value.isascii() else value
    if name.startswith("SIG"):
        name = name[3:]
    if name in signal.Signals.__members__ or f"SIG{name}" in signal.Signals.__members__:
        return f"SIG{name}"
    rt = _RT.fullmatch(name)
    if rt:
        kind, sign, offset = rt.groups()
        wrong_way = sign == ("-" if kind == "IN" else "+")
        if offset is not None and (int(offset) > _RT_SPAN or (wrong_way and int(offset))):
            raise _invalid(field, f"signal {_show(value)} is outside SIGRTMIN..SIGRTMAX "
                                  f"(RTMIN+0..{_RT_SPAN}, RTMAX-0..{_RT_SPAN})")
        return f"SIG{name}"
    raise _invalid(field, f"unknown signal {_show(value)}")


def _check_mode(value: str, field: str, allowed: tuple[str, ...], host_ok: bool, flag: str) -> None:
    if value in allowed:
        return
    if value == "host" or value.startswith("container:"):
        if value.startswith("container:"):
            container_ref(value[len("container:"):], field)
        if not host_ok:
            raise PolicyError(
                f"{value!r} shares a namespace outside the container and is refused "
                f"by this agent (operator flag --{flag})",
                field=field,
            )
        return
    raise _invalid(field, f"{_show(value)} is not one of {', '.join(map(repr, allowed))}, "
                          f"'host' or 'container:<name>'")


# ---------------------------------------------------------------- the spec


def validate_spec(spec: pb.ContainerSpec, policy: PolicyConfig,
                  *, limits: HostLimits | None = None) -> None:
    """Raise InvalidArgument or PolicyError for the first problem in ``spec``."""
    limits = limits or HostLimits.local()
    if spec.name:
        _match(NAME_RE, spec.name, "spec.name", "container name", 128)
    if not spec.image:
        raise _invalid("spec.image", "an image is required")
    _match(IMAGE_RE, spec.image, "spec.image", "image reference", 255)
    check_args(spec.command, "spec.command")
    check_args(spec.entrypoint, "spec.entrypoint")
    check_env(spec.env, "spec.env")
    validate_labels(spec.labels, "spec.labels")
    registry_allowed(spec.image, policy)
    _check_ports(spec.ports, policy)
    _check_resources(spec.resources, limits)
    _check_restart(spec.restart_policy)
    if spec.working_dir:
        absolute_path(spec.working_dir, "spec.working_dir")
    if spec.user:
        user(spec.user, "spec.user")
    if spec.hostname:
        _match(HOSTNAME_RE, spec.hostname, "spec.hostname", "hostname", 63)
    if spec.stop_signal:
        parse_signal(spec.stop_signal, "spec.stop_signal")
    _check_mounts(spec.mounts, policy)
    _check_network(spec.network, policy)
    if spec.privileged and not policy.allow_privileged:
        raise PolicyError("privileged containers are refused by this agent "
                          "(operator flag --allow-privileged)", field="spec.privileged")
    _check_mode(spec.pid_mode, "spec.pid_mode", ("",), policy.allow_host_pid, "allow-host-pid")
    _check_mode(spec.ipc_mode, "spec.ipc_mode", ("", "private", "shareable", "none"),
                policy.allow_host_ipc, "allow-host-ipc")
    _check_list(spec.cap_add, "spec.cap_add", CAP_RE, "capability")
    if spec.cap_add and not policy.allow_cap_add:
        raise PolicyError("adding capabilities is refused by this agent "
                          "(operator flag --allow-cap-add)", field="spec.cap_add")
    _check_list(spec.devices, "spec.devices", DEVICE_RE, "device")
    if spec.devices and not policy.allow_devices:
        raise PolicyError("host devices are refused by this agent "
                          "(operator flag --allow-devices)", field="spec.devices")


def _check_list(items: Iterable[str], field: str, regex: re.Pattern[str], what: str) -> None:
    values = list(items)
    if len(values) > MAX_LIST:
        raise _invalid(field, f"more than {MAX_LIST} entries")
    for i, value in enumerate(values):
        _match(regex, value, f"{field}[{i}]", what, 256)


def check_env(env: Mapping[str, str], field: str) -> None:
    if len(env) > MAX_ENV:
        raise _invalid(field, f"more than {MAX_ENV} variables")
    for key, value in env.items():
        where = f"{field}[{_show(key)}]".replace("'", '"')
        _check_key(key, where, max_len=1024)
        if "=" in key:
            raise _invalid(where, "variable names must not contain '='")
        _check_text(value, where, max_bytes=MAX_ARG_BYTES)


def _check_ports(ports: Iterable[pb.PortMapping], policy: PolicyConfig) -> None:
    items = list(ports)
    if len(items) > MAX_PORTS:
        raise _invalid("spec.ports", f"more than {MAX_PORTS} ports")
    for i, port in enumerate(items):
        where = f"spec.ports[{i}]"
        if not 1 <= port.container_port <= 65535:
            raise _invalid(f"{where}.container_port", f"{port.container_port} is not in 1..65535")
        if port.host_port > 65535:
            raise _invalid(f"{where}.host_port", f"{port.host_port} is not in 0..65535")
        if port.protocol not in ("", "tcp", "udp", "sctp"):
            raise _invalid(f"{where}.protocol",
                           f"{_show(port.protocol)} is not one of tcp, udp, sctp")
        if port.host_ip:  # "" means 127.0.0.1 (convert.create_kwargs)
            try:
                address = ipaddress.ip_address(port.host_ip)
            except ValueError:
                raise _invalid(f"{where}.host_ip",
                               f"{_show(port.host_ip)} is not an IP address") from None
            if not address.is_loopback and not policy.allow_public_ports:
                raise PolicyError(f"publishing on {port.host_ip} (beyond loopback) is refused "
                                  "by this agent (operator flag --allow-public-ports)",
                                  field=f"{where}.host_ip")


def _check_resources(res: pb.Resources, limits: HostLimits) -> None:
    max_cpus = limits.cpus * 1_000_000_000
    if not 0 <= res.nano_cpus <= max_cpus:
        raise _invalid("spec.resources.nano_cpus",
                       f"{res.nano_cpus} is not in 0..{max_cpus} (the host has {limits.cpus} CPUs)")
    mem = res.memory_bytes
    if mem and not MIN_MEMORY <= mem <= limits.memory_bytes:
        raise _invalid("spec.resources.memory_bytes",
                       f"{mem} must be 0 (unlimited) or between {MIN_MEMORY} and the host's "
                       f"{limits.memory_bytes} bytes")


def _check_restart(rp: pb.RestartPolicy) -> None:
    if rp.name not in ("", "no", "always", "unless-stopped", "on-failure"):
        raise _invalid("spec.restart_policy.name", f"{_show(rp.name)} is not one of "
                       "no, always, unless-stopped, on-failure")
    if rp.max_retries < 0:
        raise _invalid("spec.restart_policy.max_retries", "must not be negative")
    if rp.max_retries and rp.name != "on-failure":
        raise _invalid("spec.restart_policy.max_retries", "only valid with 'on-failure'")


def _check_mounts(mounts: Iterable[pb.Mount], policy: PolicyConfig) -> None:
    items = list(mounts)
    if len(items) > MAX_MOUNTS:
        raise _invalid("spec.mounts", f"more than {MAX_MOUNTS} mounts")
    for i, m in enumerate(items):
        where = f"spec.mounts[{i}]"
        absolute_path(m.target, f"{where}.target")
        if m.target == "/":
            raise _invalid(f"{where}.target", "cannot mount over '/'")
        if m.type == pb.Mount.TYPE_VOLUME:
            if m.source:
                _match(VOLUME_RE, m.source, f"{where}.source", "volume name", 255)
        elif m.type == pb.Mount.TYPE_TMPFS:
            if m.source:
                raise _invalid(f"{where}.source", "a tmpfs mount takes no source")
        elif m.type == pb.Mount.TYPE_BIND:
            if not policy.allow_bind_mounts:
                raise PolicyError("bind mounts of host paths are refused by this agent "
                                  "(operator flag --allow-bind-mounts)", field=f"{where}.type")
            absolute_path(m.source, f"{where}.source")
        else:
            raise _invalid(f"{where}.type", "mount type must be VOLUME, TMPFS or BIND")


def _check_network(network: str, policy: PolicyConfig) -> None:
    if not network:
        return
    if network == "host" or network.startswith("container:"):
        if network.startswith("container:"):
            container_ref(network[len("container:"):], "spec.network")
        if not policy.allow_host_network:
            raise PolicyError(f"network {network!r} is refused by this agent "
                              "(operator flag --allow-host-network)", field="spec.network")
        return
    _match(NAME_RE, network, "spec.network", "network name", 128)


# ---------------------------------------------------------------- images


def registry_of(image: str) -> str:
    """The registry an image reference pulls from, as the engine resolves it
    ("busybox" → "docker.io", "localhost:5000/x:1" → "localhost:5000")."""
    from docker.auth import resolve_repository_name
    from docker.utils import parse_repository_tag

    return normalise_registry(resolve_repository_name(parse_repository_tag(image)[0])[0])


def normalise_registry(name: str) -> str:
    name = name.lower().rstrip("/")
    return "docker.io" if name in ("index.docker.io", "registry-1.docker.io") else name


def registry_allowed(image: str, policy: PolicyConfig, field: str = "spec.image") -> None:
    """With an allow-list, every image must name an allowed registry, present locally
    or not: the check needs no engine call, so nothing reaches dockerd before it."""
    if not policy.allow_registries:
        return
    try:
        registry = registry_of(image)
    except Exception:  # the SDK's parser refuses it: the regex above is the judge
        raise _invalid(field, f"image reference {_show(image)} is malformed") from None
    if registry not in policy.allow_registries:
        raise PolicyError(f"registry {registry!r} of image {_show(image)} is not allowed by "
                          f"this agent (operator flag --allow-registry; allowed: "
                          f"{', '.join(policy.allow_registries)})", field=field)


# ---------------------------------------------------------------- well-known types

_TS_MIN, _TS_MAX = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31, as protobuf says
_DUR_MAX = 315576000000  # +-10,000 years


def check_well_known(message: Any, prefix: str = "") -> None:
    """Every Timestamp and Duration in ``message`` (at any depth) is in protobuf's range,
    so no handler meets a ValueError from ``ToNanoseconds``/``ToDatetime``."""
    for fd, value in message.ListFields():
        if fd.message_type is None:
            continue
        where = f"{prefix}{fd.name}"
        if fd.message_type.GetOptions().map_entry:
            if fd.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    check_well_known(item, f"{where}[{_show(str(key))}].")
            continue
        items = list(value) if fd.is_repeated else [value]
        for i, item in enumerate(items):
            at = f"{where}[{i}]" if fd.is_repeated else where
            full = fd.message_type.full_name
            if full == "google.protobuf.Timestamp":
                if not _TS_MIN <= item.seconds <= _TS_MAX or not 0 <= item.nanos <= 999_999_999:
                    raise _invalid(at, f"timestamp {item.seconds}s {item.nanos}ns is outside "
                                       "0001-01-01..9999-12-31 (nanos 0..999999999)")
            elif full == "google.protobuf.Duration":
                mixed = item.seconds and item.nanos and (item.seconds < 0) != (item.nanos < 0)
                if (not -_DUR_MAX <= item.seconds <= _DUR_MAX
                        or not -999_999_999 <= item.nanos <= 999_999_999 or mixed):
                    raise _invalid(at, f"duration {item.seconds}s {item.nanos}ns is out of range "
                                       "(|seconds| <= 315576000000, nanos of the same sign)")
            else:
                check_well_known(item, at + ".")


# ---------------------------------------------------------------- networks


def network(value: str, field: str = "network", *, create: bool = False,
            predefined: bool = True) -> str:
    """A network name to create, or an id/name to act on; ``predefined=False`` refuses
    the engine's own networks (host, none, bridge), which are never created or removed."""
    if not value:
        raise _invalid(field, "a network name is required" if create
                       else "a network id or name is required")
    _match(NAME_RE if create else REF_RE, value, field, "network name", 128)
    if not predefined and value in ("host", "none", "bridge"):
        raise _invalid(field, f"{value!r} is a predefined engine network: it cannot be "
                              "created or removed")
    return value


def network_driver(value: str, field: str = "driver") -> str:
    if value not in ("", "bridge"):
        raise _invalid(field, f"network driver {_show(value)} is not allowed: only 'bridge'")
    return "bridge"


def network_aliases(values: Iterable[str], field: str = "aliases") -> list[str]:
    _check_list(values, field, NAME_RE, "alias")
    return list(values)
