"""`shakedown-agent`: flags, their environment variables, and the config they make."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__, grpcenv  # noqa: F401  (grpcenv before any grpc import)
from agent import log as agent_log
from agent.config import AgentConfig, PolicyConfig
from agent.registration import RegistrationConfig
from agent.tls import TlsConfigError
from shakedown.keyring import KeyringError
from shakedown.keyring import load as load_keyring
from shakedown.pkilayout import PkiDir, PkiLayoutError, check_name, load_principals

ENV_PREFIX = "SHAKEDOWN_AGENT_"
POLICY_FLAGS = (
    ("allow-privileged", "privileged containers"),
    ("allow-host-network", "the host network namespace (network=host)"),
    ("allow-host-pid", "the host PID namespace"),
    ("allow-host-ipc", "the host IPC namespace"),
    ("allow-cap-add", "added Linux capabilities"),
    ("allow-devices", "host devices"),
    ("allow-bind-mounts", "bind mounts of host paths (and volumes whose driver options bind one)"),
    ("allow-public-ports", "published ports on non-loopback addresses (0.0.0.0, ::, ...)"),
    ("allow-proxy-bind", "fault proxies listening on non-loopback addresses (0.0.0.0, ...)"),
)


class ConfigError(Exception):
    pass


def _env(flag: str) -> str:
    return ENV_PREFIX + flag.upper().replace("-", "_")


def _env_bool(flag: str) -> bool:
    return os.environ.get(_env(flag), "").lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shakedown-agent",
        description="Shakedown node agent: manages containers and faults on this node for "
        "Shakedown drivers, over mutually authenticated TLS gRPC with HMAC-signed calls.",
        epilog=f"Every flag can also be set through its environment variable, "
        f"e.g. --listen as {ENV_PREFIX}LISTEN, "
        f"--allow-privileged as {ENV_PREFIX}ALLOW_PRIVILEGED=1. "
        "Typical use with the output of `shakedown certs init` and `shakedown keys init`: "
        "shakedown-agent --name n1 --listen 127.0.0.1:7701 --certs certs/ --keys certs/keys.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def opt(flag: str, help: str, **kw: object) -> None:
        env = _env(flag)
        default = os.environ.get(env, kw.pop("default", None))
        p.add_argument(f"--{flag}", default=default, help=f"{help} [env {env}]", **kw)  # type: ignore[arg-type]

    p.add_argument("--version", action="version", version=f"shakedown-agent {__version__}")
    opt("name", "node name; selects DIR/agent-NAME.crt and labels every container", metavar="NAME")
    opt(
        "listen",
        "address to serve on (port 0 picks a free one)",
        default="127.0.0.1:7700",
        metavar="HOST:PORT",
    )
    opt("certs", "PKI directory written by `shakedown certs init`", metavar="DIR")
    opt("keys", "HMAC keyring written by `shakedown keys init`", metavar="FILE")
    opt("ca", "CA bundle for client certificates (default DIR/ca.crt)", metavar="FILE")
    opt("cert", "server certificate (default DIR/agent-NAME.crt)", metavar="FILE")
    opt("key", "server private key (default DIR/agent-NAME.key)", metavar="FILE")
    opt(
        "crl",
        "certificate revocation list, re-read on change (default DIR/crl.pem)",
        metavar="FILE",
    )
    opt(
        "principals",
        "allow-list file {principal: role} (default DIR/principals.json)",
        metavar="FILE",
    )
    p.add_argument(
        "--principal",
        action="append",
        default=[],
        metavar="NAME=ROLE",
        help="allow a principal with a role (admin|observer); repeatable",
    )
    for flag, what in POLICY_FLAGS:
        p.add_argument(
            f"--{flag}",
            action="store_true",
            default=_env_bool(flag),
            help=f"allow {what} (refused by default) [env {_env(flag)}=1]",
        )
    p.add_argument(
        "--allow-registry",
        action="append",
        default=[r for r in os.environ.get(_env("allow-registry"), "").split(",") if r],
        metavar="REGISTRY",
        help="only run images from this registry (docker.io, ghcr.io, localhost:5000); "
        f"repeatable; default any [env {_env('allow-registry')}=A,B]",
    )
    p.add_argument(
        "--adopt",
        action="append",
        default=[],
        metavar="label=KEY[=VALUE]",
        help="also act on unmanaged containers with this label (never reaps them); "
        "repeatable, e.g. --adopt label=persys.managed=true",
    )
    opt(
        "max-clock-skew", "accepted HMAC timestamp skew in seconds", default="30", metavar="SECONDS"
    )
    p.add_argument(
        "--accept-hmac-v1",
        action="store_true",
        default=_env_bool("accept-hmac-v1"),
        help="also accept legacy HMAC scheme v1 signatures, which name no agent and so can be "
        "replayed to another agent sharing the keyring (refused by default) "
        f"[env {_env('accept-hmac-v1')}=1]",
    )
    opt("session-ttl", "default session TTL in seconds", default="30", metavar="SECONDS")
    opt(
        "reap-interval",
        "how often expired sessions are reaped, seconds",
        default="1",
        metavar="SECONDS",
    )
    opt(
        "state-dir",
        "where the heartbeat used to age sessions across restarts and the HMAC replay "
        "window (nonces) live "
        "(default ~/.local/state/shakedown/agent-NAME)",
        metavar="DIR",
    )
    opt(
        "docker-host", "Docker engine URL (default: DOCKER_HOST or the local socket)", metavar="URL"
    )
    opt("grace-period", "seconds in-flight calls get on SIGTERM", default="10", metavar="SECONDS")
    opt("port-file", "write the bound port here once serving (useful with port 0)", metavar="FILE")
    opt("log-level", "debug, info, warning or error", default="info", metavar="LEVEL")
    opt("register-etcd", "register this agent in discovery through this etcd while serving "
        "(SRV _shakedown-agent._tcp.DOMAIN)", metavar="URL")
    opt("register-domain", "discovery domain to register under", default="shakedown.test",
        metavar="DOMAIN")
    opt("register-host", "address to advertise (default: the --listen host)", metavar="HOST")
    opt("register-ttl", "registration lease TTL in seconds", default="10", metavar="SECONDS")
    opt("max-long-calls-per-principal", "concurrent long-running calls (logs follow, wait, "
        "exec, stop, restart) one principal may have; more get RESOURCE_EXHAUSTED",
        default="16", metavar="N")
    return p


def _number(args: argparse.Namespace, attr: str, flag: str, low: float, high: float) -> float:
    raw = getattr(args, attr)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"--{flag}: expected a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"--{flag}: must be between {low:g} and {high:g}")
    return value


def _existing(
    value: str | None, default: Path | None, flag: str, required: bool = True
) -> Path | None:
    path = Path(value) if value else default
    if path is None:
        if required:
            raise ConfigError(f"--{flag} is required (or give --certs DIR)")
        return None
    if required and not path.is_file():
        raise ConfigError(f"--{flag} {path}: no such file")
    return path


def _registries(values: Sequence[str]) -> tuple[str, ...]:
    from agent.policy import DOMAIN_RE, normalise_registry

    out = []
    for value in values:
        if not DOMAIN_RE.fullmatch(value) and value != "docker.io":
            raise ConfigError(f"--allow-registry {value!r}: expected a registry host[:port]")
        out.append(normalise_registry(value))
    return tuple(dict.fromkeys(out))


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    if not args.name:
        raise ConfigError("--name is required")
    try:
        check_name("agent", args.name)
    except PkiLayoutError as exc:
        raise ConfigError(f"--name: {exc}") from None
    if not args.keys:
        raise ConfigError(
            "--keys is required: HMAC is mandatory (create one with `shakedown keys init FILE`)"
        )
    host, sep, port = str(args.listen).rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen {args.listen!r}: expected HOST:PORT")
    pki = PkiDir(Path(args.certs)) if args.certs else None
    ca = _existing(args.ca, pki.ca_cert if pki else None, "ca")
    cert = _existing(args.cert, pki.agent_cert(args.name) if pki else None, "cert")
    key = _existing(args.key, pki.agent_key(args.name) if pki else None, "key")
    # The CRL may appear later (`certs revoke`): watch its default path regardless.
    crl = Path(args.crl) if args.crl else (pki.crl if pki else None)
    principals_file = _existing(args.principals, None, "principals") if args.principals else None
    if principals_file is None and pki is not None and pki.principals.is_file():
        principals_file = pki.principals
    principals: dict[str, str] = {}
    for item in args.principal:
        name, sep, role = item.partition("=")
        if not sep or role not in ("admin", "observer"):
            raise ConfigError(f"--principal {item!r}: expected NAME=ROLE with ROLE admin|observer")
        principals[name] = role
    try:
        known = load_principals(principals_file) if principals_file else {}
        load_keyring(args.keys)
    except (PkiLayoutError, KeyringError) as exc:
        raise ConfigError(str(exc)) from None
    if not known and not principals:
        raise ConfigError("no principals allowed: give --principals FILE or --principal NAME=ROLE")
    adopt: list[str] = []
    for item in args.adopt:
        kind, sep, selector = item.partition("=")
        if kind != "label" or not sep or not selector or selector.startswith("="):
            raise ConfigError(f"--adopt {item!r}: expected label=KEY or label=KEY=VALUE")
        adopt.append(selector)
    state_dir = (
        Path(args.state_dir)
        if args.state_dir
        else (
            Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state"))
            / "shakedown"
            / f"agent-{args.name}"
        )
    )
    assert ca and cert and key
    registration = None
    if args.register_etcd:
        registration = RegistrationConfig(
            etcd=args.register_etcd, domain=args.register_domain,
            host=args.register_host or host,
            ttl=int(_number(args, "register_ttl", "register-ttl", 2, 3600)))
    return AgentConfig(
        name=args.name,
        listen=args.listen,
        ca=ca,
        cert=cert,
        key=key,
        keys=Path(args.keys),
        principals=principals,
        crl=crl,
        principals_file=principals_file,
        policy=PolicyConfig(
            **{f.replace("-", "_"): getattr(args, f.replace("-", "_")) for f, _ in POLICY_FLAGS},
            allow_registries=_registries(args.allow_registry),
        ),
        adopt=tuple(adopt),
        max_clock_skew=_number(args, "max_clock_skew", "max-clock-skew", 1, 3600),
        accept_hmac_v1=bool(args.accept_hmac_v1),
        default_session_ttl=int(_number(args, "session_ttl", "session-ttl", 1, 86400)),
        reap_interval=_number(args, "reap_interval", "reap-interval", 0.05, 60),
        state_dir=state_dir,
        docker_host=args.docker_host,
        grace_period=_number(args, "grace_period", "grace-period", 0, 600),
        port_file=Path(args.port_file) if args.port_file else None,
        log_level=str(args.log_level).lower(),
        registration=registration,
        max_long_calls_per_principal=int(_number(
            args, "max_long_calls_per_principal", "max-long-calls-per-principal", 1, 4096)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"shakedown-agent: {exc}", file=sys.stderr)
        return 2
    if config.log_level not in ("debug", "info", "warning", "error"):
        print(
            f"shakedown-agent: --log-level {config.log_level!r}: use debug|info|warning|error",
            file=sys.stderr,
        )
        return 2
    agent_log.configure(config.log_level, config.name)
    import docker

    from agent.server import serve  # import late: --help must not need Docker or gRPC

    try:
        asyncio.run(serve(config))
    except docker.errors.DockerException as exc:
        where = config.docker_host or os.environ.get("DOCKER_HOST", "the local socket")
        print(f"shakedown-agent: cannot reach the Docker engine at {where}: {exc}",
              file=sys.stderr)
        return 1
    except (TlsConfigError, OSError) as exc:
        logging.getLogger("shakedown.agent").error(
            "cannot start", extra={"fields": {"error": str(exc)}}
        )
        print(f"shakedown-agent: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
