"""The README's walkthrough, run as written: only the agent's name and port are made
unique to this run, and the backgrounded agent is stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import docker

from driver.control.process import free_port, wait_for
from tests.conftest import remove_run_containers

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Walkthrough", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_walkthrough_runs_as_written(tmp_path: Path, busybox_image: str, run_id: str,
                                     docker_client: docker.DockerClient) -> None:
    script = walkthrough()
    assert "shakedown-agent --name n1 --listen 127.0.0.1:7701" in script
    name, port = f"t{run_id}-readme", free_port()
    script = re.sub(r"\bn1\b", name, script).replace("7701", str(port))
    script = re.sub(r"\bhello\b", f"{name}-hello", script)  # the container's name, too
    # The agent line ends in '&': remember its PID so the test stops it, and only it.
    script = script.replace(" &\n", " &\necho $! > agent.pid\n", 1)
    # The agent needs a moment to listen before step 4.
    script = script.replace("# 4. Drive it.", f"until (echo > /dev/tcp/127.0.0.1/{port}) "
                            "2>/dev/null; do sleep 0.1; done\n# 4. Drive it.")
    (tmp_path / "walkthrough.sh").write_text("set -euo pipefail\n" + script)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("GRPC_VERBOSITY", None)
    # Files, not pipes: the backgrounded agent inherits them and outlives the script.
    stdout, stderr = tmp_path / "out.txt", tmp_path / "err.txt"
    try:
        with stdout.open("w") as o, stderr.open("w") as e:
            code = subprocess.run(["bash", "walkthrough.sh"], cwd=tmp_path, env=env,
                                  timeout=240, stdout=o, stderr=e).returncode
    finally:
        remove_run_containers(docker_client, name)  # only this agent's, if a step failed
        pid_file = tmp_path / "agent.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not Path(f"/proc/{pid}").exists()
                     or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), 20,
                     what="the walkthrough's agent to stop")
    out, err = stdout.read_text(), stderr.read_text()
    assert code == 0, out[-3000:] + err[-3000:]
    assert "hello" in out  # agent logs
    assert "every case as expected" in out  # verify auth
    assert '"sessions"' in out  # grpc call, signed, answered
    assert not re.search(r"^[EW]\d{4} ", err, re.M)  # no gRPC core log lines
