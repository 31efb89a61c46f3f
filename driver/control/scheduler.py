"""The reference scheduler (examples/scheduler): finding its build, and its plain-HTTP probes.

The binary is built by scripts/build-scheduler.sh into the per-machine cache
(like CoreDNS), with a stable symlink ${cache}/scheduler to the current build.
Health is its own /healthz (it checks etcd), leadership its `scheduler_leader`
gauge on /metrics: both on the loopback -metrics address, no TLS needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from driver.control.coredns import cache_dir

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-scheduler.sh"
_LEADER_RE = re.compile(r"^scheduler_leader\s+([0-9.eE+-]+)\s*$", re.MULTILINE)


def find_scheduler_binary(*, build_first: bool = False) -> Path:
    """$SHAKEDOWN_SCHEDULER; the symlink ${cache}/scheduler; else run the build script."""
    env = os.environ.get("SHAKEDOWN_SCHEDULER")
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"SHAKEDOWN_SCHEDULER={env} is not an executable file")
        return path
    link = cache_dir() / "scheduler"
    if not (build_first and BUILD_SCRIPT.is_file()) and link.exists():
        return link.resolve()
    if not BUILD_SCRIPT.is_file():
        raise FileNotFoundError(
            f"no scheduler binary: {link} does not exist and the build script is not here. "
            "From a Shakedown checkout run scripts/build-scheduler.sh (needs Go), "
            "or set SHAKEDOWN_SCHEDULER to a binary built from examples/scheduler.")
    out = subprocess.run([str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE,
                         text=True).stdout.strip()
    if not out:
        raise RuntimeError(f"{BUILD_SCRIPT} printed no binary path")
    return Path(out.splitlines()[-1])


def _get(port: int, path: str, timeout: float) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def health(metrics_port: int, timeout: float = 2.0) -> str | None:
    """None when /healthz says ok, else why not."""
    try:
        code, body = _get(metrics_port, "/healthz", timeout)
    except OSError as exc:
        return f"/healthz on 127.0.0.1:{metrics_port}: {getattr(exc, 'reason', exc)}"
    return None if code == 200 else f"/healthz: HTTP {code} {body.strip()[:200]}"


def is_leader(metrics_port: int, timeout: float = 2.0) -> bool | None:
    """The `scheduler_leader` gauge; None when /metrics cannot be read."""
    try:
        code, body = _get(metrics_port, "/metrics", timeout)
    except OSError:
        return None
    m = _LEADER_RE.search(body) if code == 200 else None
    return None if m is None else float(m.group(1)) >= 1


def version(binary: Path) -> str:
    """The build's identity: its cache directory is named by the source hash."""
    return binary.parent.name
