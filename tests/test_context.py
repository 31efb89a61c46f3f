"""Isolated test contexts against a real local environment (etcd, CoreDNS, 3 agents)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from driver.env import Environment
from driver.env.context import (
    CONTEXT_LABEL,
    ContextCleanupError,
    InventoryEnv,
    TestContext,
    as_host,
    open_context,
    slug,
)
from driver.types import ContainerSpec
from shakedown.labels import SESSION_LABEL_PREFIX
from tests.support.agentproc import wait_for
from tests.support.envs import module_env

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, busybox_image: str,
        docker_client: docker.DockerClient) -> Iterator[Environment]:
    yield from module_env(tmp_path_factory.mktemp("envs"), docker_client, nodes=3)


def docker_ids(client: docker.DockerClient, context_id: str) -> set[str]:
    label = f"{SESSION_LABEL_PREFIX}{CONTEXT_LABEL}={context_id}"
    return {c["Id"] for c in client.api.containers(all=True, filters={"label": label})}


def sleeper(image: str) -> ContainerSpec:
    return ContainerSpec(image, ["sleep", "300"], stop_signal="SIGKILL")


def test_slug() -> None:
    assert slug("tests/test_x.py::test_y[n1]") == "tests-test-x-py-test-y-n1"
    assert slug("") == slug("!!!") == "ctx"
    assert len(slug("a" * 200)) == 40


def test_context_gives_labels_temp_dir_and_sessions(env: Environment) -> None:
    with env.context("labels") as ctx:
        assert ctx.id.startswith("labels-") and len(ctx.id) == len("labels-") + 8
        assert ctx.labels == {"shakedown.context": ctx.id, "shakedown.env": env.name,
                              "shakedown.run": env.state.run_id}
        assert ctx.temp_dir.is_dir() and ctx.temp_dir.parent == env.paths.temp
        assert ctx.nodes == sorted(ctx.sessions) == sorted(env.clients())
        for node, handle in ctx.sessions.items():
            assert handle.client is ctx.clients[node] and handle.session.ttl_seconds == 30
            listed = {s.id: s for s in ctx.clients[node].sessions()}
            assert listed[handle.id].labels == ctx.labels
            assert listed[handle.id].name == ctx.id and not listed[handle.id].persistent


def test_exit_removes_containers_and_temp_dir(env: Environment, busybox_image: str,
                                             docker_client: docker.DockerClient) -> None:
    with env.context("exit") as ctx:
        made = [ctx.run(n, sleeper(busybox_image)) for n in ctx.nodes]
        (ctx.temp_dir / "scratch.txt").write_text("x")
        assert {c.node for c in ctx.containers()} == set(ctx.nodes)
        assert docker_ids(docker_client, ctx.id) == {c.id for c in made}
        for c in made:
            assert c.labels[CONTEXT_LABEL] == ctx.id
    assert docker_ids(docker_client, ctx.id) == set()
    assert not ctx.temp_dir.exists() and ctx.closed
    for node, handle in ctx.sessions.items():
        assert handle.closed
        assert handle.id not in {s.id for s in env.clients()[node].sessions()}


def test_context_networks_are_removed_with_it(env: Environment, busybox_image: str,
                                             docker_client: docker.DockerClient) -> None:
    with env.context("net") as ctx:
        nets = {n: ctx.create_network(n, "back") for n in ctx.nodes}
        assert len({net.name for net in nets.values()}) == len(ctx.nodes)  # engine-wide names
        node = ctx.nodes[0]
        box = ctx.run(node, ContainerSpec(busybox_image, ["sleep", "60"],
                                          network=nets[node].name))
        assert nets[node].name in box.ip_addresses
        names = [net.name for net in nets.values()]
        assert all(docker_client.networks.list(names=[n]) for n in names)
    for name in names:
        assert [n for n in docker_client.networks.list(names=[name]) if n.name == name] == []


def test_exception_inside_still_cleans_up(env: Environment, busybox_image: str,
                                         docker_client: docker.DockerClient) -> None:
    seen: list[TestContext] = []
    with pytest.raises(RuntimeError, match="the test's own failure"), env.context("boom") as ctx:
        seen.append(ctx)
        ctx.run(ctx.nodes[0], sleeper(busybox_image))
        raise RuntimeError("the test's own failure")
    assert docker_ids(docker_client, seen[0].id) == set()
    assert not seen[0].temp_dir.exists()


def broken_context(env: Environment, name: str) -> tuple[TestContext, str]:
    """An open context whose first node's session can no longer be closed from here."""
    ctx = TestContext(as_host(env), name, ttl=30).open()
    node = ctx.nodes[0]
    dead = env.inventory().node(node).client()
    dead.close()  # CloseSession on a closed channel fails locally
    ctx.sessions[node].client = dead
    return ctx, ctx.sessions[node].id


def test_cleanup_error_is_raised_without_a_test_error(env: Environment) -> None:
    ctx, leaked = broken_context(env, "cleanup")
    with pytest.raises(ContextCleanupError) as err, ctx:
        pass
    assert len(err.value.errors) == 1 and leaked in err.value.errors[0]
    env.clients()[ctx.nodes[0]].close_session(leaked)
    # With a test error, that error wins (the cleanup problem becomes a note on it).
    ctx, leaked = broken_context(env, "cleanup2")
    with pytest.raises(KeyError) as err2, ctx:
        raise KeyError("mine")
    assert any("cleanup failed" in n for n in err2.value.__notes__)
    env.clients()[ctx.nodes[0]].close_session(leaked)


def test_fifty_contexts_in_parallel_do_not_interfere(env: Environment, busybox_image: str,
                                                     docker_client: docker.DockerClient) -> None:
    def one(i: int) -> tuple[str, str, list[str]]:
        with env.context(f"par{i}", ttl=10) as ctx:
            node = ctx.nodes[i % len(ctx.nodes)]
            c = ctx.run(node, sleeper(busybox_image))
            # Each context sees exactly its own container, even with 49 others alive.
            seen = [x.id for x in ctx.containers()]
            selected = [x.id for x in ctx.clients[node].list(ctx.selector, all=True)]
            assert seen == selected == [c.id], (ctx.id, seen, selected)
            return ctx.id, c.id, seen

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    assert len({r[0] for r in results}) == len({r[1] for r in results}) == 50
    for ctx_id, _, _ in results:
        assert docker_ids(docker_client, ctx_id) == set()
    assert not list(env.paths.temp.glob("par*"))


def test_inventory_env_hosts_contexts(env: Environment, busybox_image: str,
                                      docker_client: docker.DockerClient) -> None:
    remote = InventoryEnv(env.paths.inventory)
    try:
        with open_context(remote, "inv") as ctx:
            assert ctx.nodes == env.inventory().names
            assert ctx.temp_dir.parent == remote.temp_root
            c = ctx.run(ctx.nodes[-1], sleeper(busybox_image))
            assert c.labels["shakedown.env"] == remote.name
        assert docker_ids(docker_client, ctx.id) == set()
    finally:
        remote.close()
    assert not remote.temp_root.exists()


DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from driver.env import Environment
    from driver.types import ContainerSpec
    env = Environment.load(sys.argv[1], base=Path(sys.argv[2]))
    with env.context("killed", ttl=3) as ctx:
        for n in ctx.nodes:
            ctx.run(n, ContainerSpec(sys.argv[3], ["sleep", "300"]))
        print(ctx.id, flush=True)
        sys.stdin.read()  # hold the context open until killed
""")


def test_killed_driver_is_reaped_within_ttl(env: Environment, busybox_image: str,
                                           docker_client: docker.DockerClient) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, env.name, str(env.paths.root.parent), busybox_image],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert proc.stdout is not None
        ctx_id = proc.stdout.readline().strip()
        assert ctx_id.startswith("killed-"), ctx_id
        assert len(docker_ids(docker_client, ctx_id)) == 3
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # our own child, by PID
        proc.wait(timeout=10)
    # TTL 3 s + the agents' reap interval; a deadline, not a sleep.
    wait_for(lambda: not docker_ids(docker_client, ctx_id), 20,
             what=f"containers of {ctx_id} to be reaped")
