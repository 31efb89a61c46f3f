"""docker-compose.e2e.yml: the file both clients accept, the images' labels, and the whole
stack end to end (up, the seven suites from the in-cluster runner, down leaving nothing).

The end-to-end test builds nothing and takes minutes: it runs with SHAKEDOWN_E2E=1
(`.ci/run` sets it) and needs the images (`make images`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import docker
import pytest

from driver.env.compose import (
    COMPOSE_FILE,
    HOLDERS,
    RUNNER,
    SERVICES,
    ComposeConfig,
    ComposeEnvironment,
    free_subnet,
    plan,
    project_version,
)
from driver.env.state import EnvPaths, new_state
from driver.inventory import load_inventory

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("base", "python", "scheduler", "coredns")
VARS = {"SHAKEDOWN_E2E_RUN": "t-run", "SHAKEDOWN_IMAGE_TAG": "0.0.0",
        "SHAKEDOWN_E2E_CONFIG": "/nonexistent/config", "SHAKEDOWN_E2E_NET": "10.254.254",
        "SHAKEDOWN_E2E_DOMAIN": "t.shakedown.test", "SHAKEDOWN_E2E_PROJECT": "t-project",
        "SHAKEDOWN_E2E_REPORTS": "/nonexistent/reports"}


def clients() -> list[list[str]]:
    found = []
    if shutil.which("docker-compose"):
        found.append(["docker-compose"])
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        found.append(["docker", "compose"])
    return found


def compose(client: list[str], *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHAKEDOWN_")}
    return subprocess.run([*client, "-p", "t-config", "-f", str(COMPOSE_FILE), *args],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("client", clients() or [pytest.param(None, marks=pytest.mark.skip(
    reason="no docker-compose or docker compose installed"))], ids=lambda c: " ".join(c or []))
def test_every_client_accepts_the_file(client: list[str]) -> None:
    ok = compose(client, "config", "-q", env=VARS)
    assert ok.returncode == 0, ok.stderr
    services = compose(client, "config", "--services", env=VARS)
    assert set(services.stdout.split()) == {*SERVICES, *HOLDERS, RUNNER}, services.stdout
    # A variable left out fails the command, naming it, instead of a half-set stack.
    missing = compose(client, "config", "-q", env={k: v for k, v in VARS.items()
                                                   if k != "SHAKEDOWN_E2E_NET"})
    assert missing.returncode != 0 and "subnet prefix" in missing.stderr, missing.stderr


def test_the_file_is_secure_and_health_checked() -> None:
    client = (clients() or [None])[0]
    if client is None:
        pytest.skip("no docker-compose or docker compose installed")
    text = compose(client, "config", env=VARS).stdout
    # Every service but the runner has a health check; the certificates are read-only.
    assert text.count("healthcheck:") == len(SERVICES), text
    assert "/nonexistent/config/certs:/certs:ro" in text
    assert "condition: service_healthy" in text
    assert "--keys" in text and "/certs/keys.json" in text  # HMAC on every agent


@pytest.mark.docker
def test_plan_writes_what_the_file_needs(docker_client: docker.DockerClient, tmp_path: Path,
                                         run_id: str) -> None:
    """The config of an environment: PKI with the names each side dials, the keyring, a
    Corefile on etcd, and an env file that `config` accepts, on a /24 nobody uses."""
    import ipaddress

    from driver.certinfo import inspect
    from shakedown import keyring

    net = free_subnet(docker_client)
    ours = ipaddress.ip_network(f"{net}.0/24")
    for n in docker_client.networks.list():
        for c in (n.attrs.get("IPAM") or {}).get("Config") or []:
            if c.get("Subnet"):
                assert not ours.overlaps(ipaddress.ip_network(c["Subnet"], strict=False)), n.name
    paths = EnvPaths(tmp_path / "env")
    paths.make()
    state = new_state("t", "compose", "t.shakedown.test")
    cfg = ComposeConfig("t", f"shakedown-t-{run_id}", f"t-{run_id}", net, state.domain,
                        project_version(), str(COMPOSE_FILE))
    plan(paths, state, cfg)
    cert = inspect(paths.certs / f"agent-t-{run_id}-n2.crt")
    sans = json.dumps(cert)
    assert f"{net}.12" in sans and f"t-{run_id}-n2" in sans and "localhost" in sans, cert
    assert (paths.certs / f"agent-t-{run_id}-s1.crt").exists()
    assert {k.principal for k in keyring.load(paths.keys).keys} == {"driver", "viewer",
                                                                   "scheduler"}
    corefile = (paths.config / "Corefile").read_text()
    assert "t.shakedown.test.:53" in corefile and f"http://{net}.2:2379" in corefile
    nodes = {n.name: n.address for n in load_inventory(paths.inventory).nodes}
    assert nodes == {f"t-{run_id}-n{i}": f"{net}.1{i}:7700" for i in (1, 2, 3)}
    client = (clients() or [None])[0]
    if client is None:
        pytest.skip("no docker-compose or docker compose installed")
    env_file = dict(line.split("=", 1) for line in
                    (paths.config / "compose.env").read_text().splitlines())
    ok = compose(client, "config", "-q", env=env_file)
    assert ok.returncode == 0, ok.stderr


def test_compose_refuses_a_size(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from driver.cli import main

    code = main(["env", "create", "t", "--compose", "--nodes", "2", "--base", str(tmp_path)])
    assert code == 2 and "fixes 3 agents" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was written


def _image(client: docker.DockerClient, name: str) -> docker.models.images.Image:
    try:
        return client.images.get(f"shakedown/{name}:{project_version()}")
    except docker.errors.ImageNotFound:
        pytest.skip(f"shakedown/{name}:{project_version()} is not built (make images)")


@pytest.mark.docker
@pytest.mark.parametrize("name", IMAGES)
def test_images_carry_oci_labels(docker_client: docker.DockerClient, name: str) -> None:
    labels = _image(docker_client, name).labels
    assert labels["org.opencontainers.image.version"] == project_version()
    assert labels["org.opencontainers.image.source"].startswith("https://")
    revision = labels["org.opencontainers.image.revision"]
    assert len(revision.removesuffix("-dirty")) == 40, revision
    assert labels["io.shakedown.build"], labels


@pytest.mark.docker
def test_go_images_are_from_scratch(docker_client: docker.DockerClient) -> None:
    for name in ("scheduler", "coredns"):
        image = _image(docker_client, name)
        # Two files (the static binary and the health probe): one layer each, no OS.
        assert len(image.attrs["RootFS"]["Layers"]) == 2, (name, image.attrs["RootFS"])


E2E = os.environ.get("SHAKEDOWN_E2E") == "1"


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.skipif(not E2E, reason="builds four images (about a minute): set SHAKEDOWN_E2E=1")
def test_a_build_is_labelled_and_removed_by_its_own_id(docker_client: docker.DockerClient,
                                                       run_id: str) -> None:
    """A build under its own tag and id; removing by that label leaves every other image."""
    tag, build = f"t{run_id}", f"test-{run_id}"
    before = {i.id for i in docker_client.images.list()}
    env = {**os.environ, "SHAKEDOWN_IMAGE_TAG": tag, "SHAKEDOWN_BUILD_ID": build}
    try:
        out = subprocess.run([str(ROOT / "scripts" / "build-images.sh")], env=env, text=True,
                             capture_output=True, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == [w for n in ("base", "scheduler", "coredns", "python")
                                      for w in (n, f"shakedown/{n}:{tag}")], out.stdout
        ours = docker_client.images.list(filters={"label": f"io.shakedown.build={build}"})
        assert sorted(t for i in ours for t in i.tags) == sorted(
            f"shakedown/{n}:{tag}" for n in IMAGES)
    finally:
        for image in docker_client.images.list(filters={"label": f"io.shakedown.build={build}"}):
            for t in image.tags:
                if t.endswith(f":{tag}"):
                    docker_client.images.remove(t)
    assert not docker_client.images.list(filters={"label": f"io.shakedown.build={build}"})
    assert before <= {i.id for i in docker_client.images.list()}  # nobody else's went


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.skipif(not E2E, reason="the compose end-to-end run: set SHAKEDOWN_E2E=1")
def test_stack_passes_the_seven_suites_and_tears_down_clean(
        docker_client: docker.DockerClient, tmp_path: Path, run_id: str) -> None:
    for name in IMAGES:
        _image(docker_client, name)
    base = tmp_path / "envs"
    env = ComposeEnvironment.create_compose(f"t{run_id}", base=base)
    project = env.config.project
    nodes = [c.node for c in env.state.agents()]
    reports = tmp_path / "reports"
    try:
        assert env.status().healthy, env.status().problems()
        from driver.env.compose_runner import main as runner

        code = runner(["runner", env.name, "--base", str(base), "--reports", str(reports)])
        summary = json.loads((reports / "summary.json").read_text())
        assert code == 0, summary.get("totals")
        assert set(summary["suites"]) == {"async_execution", "authentication", "basic_workflow",
                                          "error_handling", "performance", "reconciliation",
                                          "service_discovery"}, summary["suites"]
        assert summary["totals"]["failed"] == 0 and summary["totals"]["passed"] > 0
        assert (reports / "junit.xml").exists() and (reports / "report.json").exists()
    finally:
        env.destroy()
    selector = {"label": f"com.docker.compose.project={project}"}
    assert docker_client.containers.list(all=True, filters=selector) == []
    assert docker_client.networks.list(filters=selector) == []
    assert docker_client.volumes.list(filters=selector) == []
    for node in nodes:
        assert docker_client.containers.list(
            all=True, filters={"label": f"io.shakedown.node={node}"}) == [], node
        assert not [v for v in docker_client.volumes.list() if v.name.endswith(f"-{node}")]
    assert not (base / f"t{run_id}").exists()
