"""driver.faults.shapes: Jepsen's partition shapes, computed from names."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driver.faults import shapes

NODES = ["n1", "n2", "n3", "n4", "n5"]


def test_bisect_puts_the_smaller_half_first() -> None:
    assert shapes.bisect([]) == ([], [])
    assert shapes.bisect(["a"]) == ([], ["a"])
    assert shapes.bisect(["a", "b", "c", "d", "e"]) == (["a", "b"], ["c", "d", "e"])


def test_isolate_cuts_one_node_off() -> None:
    g = shapes.isolate(NODES, "n3")
    assert g["n3"] == ["n1", "n2", "n4", "n5"]
    assert all(g[n] == ["n3"] for n in NODES if n != "n3")
    with pytest.raises(ValueError):
        shapes.isolate(NODES, "n9")


def test_halves_given_and_random() -> None:
    g = shapes.halves(NODES, shuffle=False)
    assert g["n1"] == ["n3", "n4", "n5"] and g["n5"] == ["n1", "n2"]
    seen = shapes.visible(shapes.halves(NODES, random.Random(7)), NODES)
    sizes = sorted(len(v) + 1 for v in seen.values())
    assert sizes == [2, 2, 3, 3, 3]
    assert shapes.given(["a"], ["b", "c"]) == {"a": ["b", "c"], "b": ["a"], "c": ["a"]}


def test_bridge_keeps_one_node_talking_to_both_sides() -> None:
    g = shapes.bridge(NODES, shuffle=False)
    assert "n3" not in g and all("n3" not in v for v in g.values())
    seen = shapes.visible(g, NODES)
    assert seen["n3"] == {"n1", "n2", "n4", "n5"}
    assert seen["n1"] == {"n2", "n3"} and seen["n4"] == {"n3", "n5"}


@pytest.mark.parametrize("seed", range(5))
def test_majorities_ring_every_node_sees_a_distinct_majority(seed: int) -> None:
    g = shapes.majorities_ring(NODES, random.Random(seed))
    seen = shapes.visible(g, NODES)
    views = {frozenset(v | {n}) for n, v in seen.items()}
    assert all(len(v | {n}) == shapes.majority(len(NODES)) for n, v in seen.items())
    assert shapes.majorities_ring(NODES, shuffle=False)["n1"] == ["n3", "n4"]
    assert len(views) == len(NODES)  # no two the same


def test_duplicate_names_and_tiny_rings_are_refused() -> None:
    with pytest.raises(ValueError):
        shapes.halves(["a", "a"])
    with pytest.raises(ValueError):
        shapes.majorities_ring(["a", "b", "c"])


names = st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=4, max_size=9,
                 unique=True)


@given(names, st.integers(0, 2**32))
def test_shapes_hold_their_promises_for_any_names(nodes: list[str], seed: int) -> None:
    rng = random.Random(seed)
    seen = shapes.visible(shapes.majorities_ring(nodes, rng), nodes)
    m = shapes.majority(len(nodes))
    views = [frozenset(v | {n}) for n, v in seen.items()]
    assert all(len(v) >= m for v in views) and len(set(views)) == len(nodes)
    halves = shapes.visible(shapes.halves(nodes, rng), nodes)
    assert sorted({len(v) + 1 for v in halves.values()}) in (
        [len(nodes) // 2, len(nodes) - len(nodes) // 2], [len(nodes) // 2])
    bridged = shapes.visible(shapes.bridge(nodes, rng), nodes)
    middle = [n for n, v in bridged.items() if len(v) == len(nodes) - 1]
    assert len(middle) == 1
    lonely = rng.choice(nodes)
    assert shapes.visible(shapes.isolate(nodes, lonely), nodes)[lonely] == set()
