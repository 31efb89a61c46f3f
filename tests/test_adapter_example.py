"""The adapter example in docs/adapters.md, run as written, against a real agent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from driver.adapters import SystemAdapter, WorkloadSpec
from driver.control.process import wait_for
from tests.support.agentproc import AgentProcess

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters.md"


def example_namespace() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    ns: dict[str, Any] = {}
    exec(compile(blocks[0], str(DOC), "exec"), ns)  # the first block is the whole adapter
    return ns


def test_the_documented_adapter_works(agent_proc: AgentProcess, busybox_image: str,
                                      run_id: str) -> None:
    ns = example_namespace()
    client = agent_proc.client(timeout=30)
    adapter = ns["DirectAdapter"]({agent_proc.name: client})
    try:
        assert isinstance(adapter, SystemAdapter)
        name = f"ex-{run_id}"
        w = adapter.apply(WorkloadSpec(name, busybox_image, ["sleep", "300"], replicas=2))
        assert w.generation == 1
        wait_for(lambda: adapter.converged(w), 30, what="2 replicas running")
        seen = adapter.get(name)
        assert seen is not None and [r.index for r in seen.replicas] == [0, 1]
        # Ground truth from the agent, by the adapter's labels: exactly its 2 containers.
        truth = client.list(adapter.container_labels(w))
        assert sorted(c.id for c in truth) == sorted(r.container_id for r in seen.replicas)
        assert [n.healthy for n in adapter.nodes()] == [True]

        w2 = adapter.apply(WorkloadSpec(name, busybox_image, ["sleep", "301"], replicas=1))
        assert w2.generation == 2
        wait_for(lambda: adapter.converged(w2), 30, what="1 replica at generation 2")
        assert [x.name for x in adapter.list() if x.name == name] == [name]

        adapter.delete(name)
        adapter.delete(name)  # idempotent
        assert adapter.get(name) is None and client.list(adapter.container_labels(w)) == []
    finally:
        adapter.close()
        client.close()
