"""Suite error_handling: bad requests get precise errors and leave the agent healthy."""

from __future__ import annotations

import pytest

from driver.env.context import TestContext
from driver.images import BUSYBOX_IMAGE
from driver.types import ContainerSpec, Mount, PortMapping
from shakedown.errors import InvalidArgument, NotFound, PolicyError

pytestmark = [pytest.mark.shakedown, pytest.mark.suite("error_handling")]
ABSENT = "shakedown-suite-absent-container"


def invalid_specs(image: str) -> list[tuple[str, ContainerSpec, str]]:
    """(id, spec, the field the agent must name)."""
    return [
        ("empty-image", ContainerSpec(""), "spec.image"),
        ("bad-image-ref", ContainerSpec("UPPER/Case!!"), "spec.image"),
        ("bad-name", ContainerSpec(image, ["true"], name="-bad name"), "spec.name"),
        ("reserved-label", ContainerSpec(image, ["true"], labels={"io.shakedown.x": "1"}),
         "spec.labels"),
        ("port-out-of-range", ContainerSpec(image, ["true"], ports=[PortMapping(70000)]),
         "spec.ports"),
        ("negative-cpus", ContainerSpec(image, ["true"], cpus=-1.0), "spec.resources"),
        ("bad-mount-target", ContainerSpec(image, ["true"], mounts=[
            Mount("relative/path", "vol", "volume")]), "spec.mounts"),
    ]


CASES = invalid_specs(BUSYBOX_IMAGE)  # never created: rejected before the image matters


@pytest.mark.parametrize(("spec", "field"), [(s, f) for _, s, f in CASES],
                         ids=[i for i, _, _ in CASES])
def test_invalid_spec_is_rejected_with_its_field(ctx: TestContext, shakedown_node: str,
                                                 spec: ContainerSpec, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        ctx.create(shakedown_node, spec)
    assert err.value.field is not None and err.value.field.startswith(field), err.value
    assert ctx.containers() == []


def test_privileged_is_refused_by_policy(ctx: TestContext, shakedown_node: str,
                                         shakedown_image: str) -> None:
    info = ctx.clients[shakedown_node].node_info()
    if info.policy.allow_privileged:
        pytest.skip(f"node {shakedown_node} allows privileged containers")
    with pytest.raises(PolicyError) as err:
        ctx.run(shakedown_node, ContainerSpec(shakedown_image, ["true"], privileged=True))
    assert err.value.field == "spec.privileged", err.value
    assert ctx.containers() == []


@pytest.mark.parametrize("op", ["inspect", "stop", "start", "kill", "remove", "logs", "exec"])
def test_unknown_container_is_not_found(ctx: TestContext, shakedown_node: str, op: str) -> None:
    agent = ctx.clients[shakedown_node]
    calls = {
        "inspect": lambda: agent.inspect(ABSENT),
        "stop": lambda: agent.stop(ABSENT, timeout=1),
        "start": lambda: agent.start(ABSENT),
        "kill": lambda: agent.kill(ABSENT),
        "remove": lambda: agent.remove(ABSENT, force=True),
        "logs": lambda: agent.logs(ABSENT).read(),
        "exec": lambda: agent.exec(ABSENT, ["true"]),
    }
    with pytest.raises(NotFound):
        calls[op]()


def test_agent_healthy_after_errors(ctx: TestContext, shakedown_node: str,
                                   shakedown_image: str) -> None:
    agent = ctx.clients[shakedown_node]
    for _, spec, _ in invalid_specs(shakedown_image):
        with pytest.raises(InvalidArgument):
            ctx.create(shakedown_node, spec)
    assert agent.node_info().name == shakedown_node
    c = ctx.run(shakedown_node, ContainerSpec(shakedown_image, ["sh", "-c", "exit 0"]))
    assert agent.wait(c, timeout=20) == 0
