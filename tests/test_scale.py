"""The driver at (small) scale: 10 agents, one channel each, threads that are reused.

The 100-agent figures are bench/bench_scale.py's; this is the cheap, asserting
version of what it found: a fan-out starts no thread once the pool is warm, a
context's sessions share one keep-alive thread, and repeated calls reuse each
agent's one connection.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import psutil
import pytest

from driver.env.context import InventoryEnv, TestContext
from driver.fanout import fan_out
from driver.inventory import load_inventory
from tests.conftest import RUN_ID, remove_run_containers
from tests.support.agentproc import AgentProcess, make_pki, wait_for

AGENTS = 10


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient,
          busybox_image: str) -> Iterator[tuple[list[AgentProcess], Path]]:
    root = tmp_path_factory.mktemp(f"scale-{RUN_ID}")
    names = tuple(f"t{RUN_ID}-s{uuid.uuid4().hex[:4]}{i}" for i in range(AGENTS))
    pki = make_pki(root / "certs", names)
    agents = [AgentProcess(n, pki, root) for n in names]
    try:
        with ThreadPoolExecutor(4) as pool:  # 2 cores: a few start at once
            list(pool.map(lambda a: a.start(timeout=60), agents))
        inventory = root / "inventory.toml"
        inventory.write_text(
            f'[defaults]\ncerts = "{pki.root}"\nkeys = "{pki.keys}"\n\n' + "".join(
                f'[[nodes]]\nname = "{a.name}"\naddress = "{a.address}"\n\n' for a in agents))
        yield agents, inventory
    finally:
        for a in agents:
            a.stop()
        for n in names:
            remove_run_containers(docker_client, n)


def connections_to(ports: set[int]) -> int:
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED)


def test_fan_out_over_10_agents_one_channel_each(
        fleet: tuple[list[AgentProcess], Path]) -> None:
    agents, inventory = fleet
    clients = load_inventory(inventory).clients()
    ports = {a.port for a in agents}
    try:
        infos = fan_out(clients, lambda c: c.node_info()).unwrap()
        assert {n: i.name for n, i in infos.items()} == {a.name: a.name for a in agents}
        for _ in range(3):
            listed = fan_out(clients, lambda c: c.list(all=True))
            assert listed.failed == {}
        # One connection per agent, however many calls went over it.
        assert connections_to(ports) == AGENTS
    finally:
        for c in clients.values():
            c.close()


def test_context_over_10_agents_shares_one_keepalive_thread(
        fleet: tuple[list[AgentProcess], Path]) -> None:
    agents, inventory = fleet
    env = InventoryEnv(inventory, name="scale")
    try:
        with TestContext(env, "scale", ttl=30) as ctx:
            assert sorted(ctx.sessions) == sorted(a.name for a in agents)
            names = [t.name for t in threading.enumerate()]
            assert names.count("shakedown-keepalives") == 1
            assert not any(n.startswith("shakedown-keepalive-") and len(n) > 24 for n in names)
            ids = {n: h.id for n, h in ctx.sessions.items()}
            live = fan_out(env.clients(), lambda c: {s.id for s in c.sessions()}).unwrap()
            assert all(ids[n] in live[n] for n in ids)
        gone = fan_out(env.clients(), lambda c: {s.id for s in c.sessions()}).unwrap()
        assert not any(ids[n] in gone[n] for n in ids)
    finally:
        env.close()


def test_fan_out_reuses_its_threads_and_nests() -> None:
    items = {str(i): i for i in range(20)}
    barrier = threading.Barrier(len(items), timeout=30)

    def ident(_: object) -> int:
        barrier.wait()  # all 20 at once: each round needs 20 threads
        return threading.get_ident()

    fan_out(items, ident).unwrap()  # type: ignore[arg-type]  # warm: the pool has its threads
    existing = {t.ident for t in threading.enumerate()}
    for _ in range(3):
        used = set(fan_out(items, ident).unwrap().values())  # type: ignore[arg-type]
        assert used <= existing, "a warm fan-out started a thread"
    # A fan-out inside a fan-out gets its own pool (no waiting on the shared one).
    nested = fan_out({"a": 1, "b": 2},  # type: ignore[arg-type]
                     lambda x: sorted(fan_out(items, lambda y: y * x).unwrap().values()))
    assert nested.unwrap() == {"a": list(range(20)), "b": [2 * i for i in range(20)]}


def test_one_scheduler_keeps_every_session_alive_and_stops_one(
        fleet: tuple[list[AgentProcess], Path]) -> None:
    _, inventory = fleet
    clients = load_inventory(inventory).clients()
    try:
        handles = fan_out(clients, lambda c: c.open_session(ttl=1)).unwrap()
        first, *rest = handles.values()
        first.stop_keepalive()
        # The stopped one is reaped (TTL 1 s, reaper every 1 s) ...
        wait_for(lambda: first.id not in {s.id for s in first.client.sessions()}, 20,
                 what="the agent to reap the session whose keep-alives stopped")
        # ... while the others, kept alive by the one scheduler, outlive several TTLs.
        until = time.monotonic() + 3.5
        while time.monotonic() < until:
            alive = fan_out({h.id: h.client for h in rest},
                            lambda c: {s.id for s in c.sessions()}).unwrap()
            assert all(sid in ids for sid, ids in alive.items())
            threading.Event().wait(0.5)
        assert all(h.keepalive_error is None for h in rest)
        for h in rest:
            h.close()
    finally:
        for c in clients.values():
            c.close()
