"""A throwaway local environment for a test module, and the proof that destroy cleaned up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import docker

from driver.control.process import alive
from driver.env import Environment


def assert_env_gone(client: docker.DockerClient, nodes: list[str], pids: list[int],
                    root: Path) -> None:
    assert not [p for p in pids if alive(p)], "a process of the environment survived destroy"
    for node in nodes:
        selector = {"label": f"io.shakedown.node={node}"}
        assert not client.containers.list(all=True, filters=selector), node
        assert not client.networks.list(filters=selector), node
    assert not root.exists()


def module_env(base: Path, client: docker.DockerClient, nodes: int,
               schedulers: int = 0, scheduler_bugs: list[str] | None = None,
               ) -> Iterator[Environment]:
    """Create, yield, destroy, and assert nothing of it is left (no process, container, file).

    No scheduler replicas unless asked: most tests only need agents, and CI time counts.
    """
    name = f"t{uuid.uuid4().hex[:8]}"
    try:
        env = Environment.create(name, nodes=nodes, schedulers=schedulers, base=base,
                                 scheduler_bugs=scheduler_bugs)
    except BaseException:
        # A start that failed halfway leaves what did start running: take it all down.
        if (base / name / "env.json").exists():
            Environment.load(name, base=base).destroy()
        raise
    node_names = [c.node for c in env.state.agents()]
    pids = [p.pid for c in env.state.components.values() if (p := c.managed())]
    try:
        yield env
    finally:  # also when the generator is closed (a test looping over it failed)
        env.destroy()
    assert_env_gone(client, node_names, pids, env.paths.root)
