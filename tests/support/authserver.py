"""The grpc-go auth test server (tools/authtestserver) as a test fixture.

Built by scripts/build-authtestserver.sh into the per-machine cache (a no-op
when current), started on a free loopback port, stopped by PID.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from driver.control.process import ManagedProcess, free_port, spawn

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-authtestserver.sh"


def build() -> Path:
    out = subprocess.run(
        [str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True, timeout=600
    ).stdout
    return Path(out.strip().splitlines()[-1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def auth_test_server(
    certs: Path,
    agent: str,
    workdir: Path,
    *,
    allow: str = "driver",
    crl: Path | None = None,
    deny_code: str = "permission_denied",
    reflection: bool = True,
) -> Iterator[str]:
    """Serve with agent-<agent>.crt as the server cert; yields HOST:PORT.

    deny_code: the status a CN off the allow-list gets (permission_denied or
    unimplemented); reflection=False serves no reflection.
    """
    port = free_port()
    argv = [
        str(build()),
        "-listen", f"127.0.0.1:{port}",
        "-ca", str(certs / "ca.crt"),
        "-cert", str(certs / f"agent-{agent}.crt"),
        "-key", str(certs / f"agent-{agent}.key"),
        "-allow", allow,
        "-deny-code", deny_code,
    ]  # fmt: skip
    if not reflection:
        argv.append("-no-reflection")
    if crl is not None:
        argv += ["-crl", str(crl)]
    proc: ManagedProcess = spawn("authtestserver", argv, workdir / f"ats-{port}.log", detach=False)
    try:
        proc.wait_ready(lambda: _listening(port), 10.0, "authtestserver listening")
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()
