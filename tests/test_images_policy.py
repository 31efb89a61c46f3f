"""Image references under policy: the registry allow-list, and pull failures that are
not mistaken for a dead agent. `.invalid` never resolves (RFC 2606), so no pull
traffic leaves the machine."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from driver import AgentClient, ContainerSpec, PolicyError
from driver.cli import main
from shakedown.errors import ImagePullError
from tests.conftest import RUN_ID, remove_run_containers
from tests.support.agentproc import AgentProcess, make_pki

pytestmark = pytest.mark.docker
MISSING = "nonexistent.invalid/shakedown/none:1"


def test_pull_failure_is_its_own_error_and_exit_code(
    client: AgentClient, agent_proc: AgentProcess, capsys: pytest.CaptureFixture[str],
) -> None:
    session = client.open_session(ttl=30)
    with pytest.raises(ImagePullError) as err:
        session.run(ContainerSpec(MISSING, ["true"], pull="always"))
    session.close()
    assert err.value.field == "spec.image" and MISSING in str(err.value)
    capsys.readouterr()
    code = main(["agent", "run", "--inventory", str(agent_proc.inventory), "--pull", "always",
                 MISSING, "true"])
    err_text = capsys.readouterr().err
    assert code == 3, err_text
    assert MISSING in err_text and "unreachable" not in err_text


def test_registry_allow_list_refuses_before_any_pull(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient,
) -> None:
    name = f"t{RUN_ID}-reg"
    agent = AgentProcess(name, make_pki(tmp_path / "certs", (name,)), tmp_path,
                         extra_args=["--allow-registry", "registry.example.invalid:5000"])
    agent.start()
    try:
        with agent.client() as c:
            session = c.open_session(ttl=30)
            for image in (MISSING, busybox_image):  # local images are checked too
                with pytest.raises(PolicyError) as err:
                    session.run(ContainerSpec(image, ["true"], pull="always"))
                assert err.value.field == "spec.image"
                assert "--allow-registry" in str(err.value)
            # Not flagged: an image from the allowed registry reaches the pull step.
            with pytest.raises(ImagePullError):
                session.run(ContainerSpec("registry.example.invalid:5000/x:1", ["true"],
                                          pull="always"))
            session.close()
    finally:
        agent.stop()
        remove_run_containers(docker_client, name)
