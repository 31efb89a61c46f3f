"""Partition shapes as grudges, computed from names (pure; Jepsen's semantics).

A grudge maps each node to the nodes it must not hear from; the agent cuts
both directions in each target's namespace. Components are lists of names;
a *complete* grudge makes every node hate every node outside its component.
Functions taking ``rng`` shuffle first; pass ``random.Random(seed)`` to replay.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

Grudge = dict[str, list[str]]


def _shuffled(nodes: Sequence[str], rng: random.Random | None) -> list[str]:
    out = list(nodes)
    (rng or random.Random()).shuffle(out)
    return out


def _unique(nodes: Sequence[str]) -> list[str]:
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"node names must be unique: {list(nodes)}")
    return list(nodes)


def majority(n: int) -> int:
    """The smallest number of nodes that is more than half of ``n``."""
    return n // 2 + 1


def bisect(nodes: Sequence[str]) -> tuple[list[str], list[str]]:
    """Two halves, the first the smaller: [1 2 3 4 5] -> [1 2], [3 4 5]."""
    half = len(nodes) // 2
    return list(nodes[:half]), list(nodes[half:])


def complete_grudge(components: Sequence[Sequence[str]]) -> Grudge:
    """Every node hates every node outside its own component."""
    everyone = [n for c in components for n in c]
    _unique(everyone)
    grudge: Grudge = {}
    for comp in components:
        inside = set(comp)
        for node in comp:
            grudge[node] = [n for n in everyone if n not in inside]
    return {k: v for k, v in grudge.items() if v}


def isolate(nodes: Sequence[str], node: str | None = None,
            rng: random.Random | None = None) -> Grudge:
    """Cut one node (given, or chosen at random) off from all the others."""
    nodes = _unique(nodes)
    if node is None:
        node = (rng or random.Random()).choice(nodes)
    if node not in nodes:
        raise ValueError(f"{node!r} is not one of {nodes}")
    return complete_grudge([[node], [n for n in nodes if n != node]])


def halves(nodes: Sequence[str], rng: random.Random | None = None, *,
           shuffle: bool = True) -> Grudge:
    """Two halves that cannot hear each other (random halves unless ``shuffle=False``,
    which keeps the given order: the first nodes form the smaller half)."""
    nodes = _unique(nodes)
    return complete_grudge(bisect(_shuffled(nodes, rng) if shuffle else nodes))


def given(*components: Sequence[str]) -> Grudge:
    """Components chosen by the caller, e.g. given(["a", "b"], ["c", "d", "e"])."""
    return complete_grudge(components)


def bridge(nodes: Sequence[str], rng: random.Random | None = None, *,
           shuffle: bool = True) -> Grudge:
    """Two halves, joined by one node (the first of the larger half) that hears both
    sides and that both sides hear."""
    nodes = _unique(nodes)
    if len(nodes) < 3:
        raise ValueError("a bridge needs at least 3 nodes")
    first, second = bisect(_shuffled(nodes, rng) if shuffle else nodes)
    middle = second[0]
    grudge = complete_grudge([first, second])
    grudge.pop(middle, None)
    return {k: [n for n in v if n != middle] for k, v in grudge.items()}


def majorities_ring(nodes: Sequence[str], rng: random.Random | None = None, *,
                    shuffle: bool = True) -> Grudge:
    """Every node sees a majority, and no two see the same one (Jepsen's
    majorities-ring): nodes on a ring, each hearing the ring neighbours within
    ``majority // 2`` of it. Jepsen's perfect variant takes a window of ``majority``
    nodes around each; the agent cuts both directions, so windows must be symmetric:
    for an odd majority they are the same, for an even one each node sees one more
    node than a bare majority (views stay distinct)."""
    nodes = _unique(nodes)
    n = len(nodes)
    if n < 4:
        raise ValueError("a majorities ring needs at least 4 nodes (with 3, any two "
                         "nodes' majorities overlap into the whole ring)")
    ring = _shuffled(nodes, rng) if shuffle else nodes
    reach = majority(n) // 2
    grudge: Grudge = {}
    for i, node in enumerate(ring):
        near = {ring[(i + k) % n] for k in range(-reach, reach + 1)}
        grudge[node] = [x for x in ring if x not in near]
    return grudge


def visible(grudge: Grudge, nodes: Sequence[str]) -> dict[str, set[str]]:
    """Who each node can still exchange traffic with, once both directions of each
    grudge are cut (as the agent cuts them)."""
    cut = {(a, b) for a, peers in grudge.items() for b in peers}
    return {a: {b for b in nodes if b != a and (a, b) not in cut and (b, a) not in cut}
            for a in nodes}
