"""The workload registry's linearizability checker (driver/fuzz/checkers/linearizable.py).

Hand-written histories for each verdict, the time limit, and a cross-check on many
Hypothesis-generated histories against two independent oracles: porcupine (the Go helper in
tools/porcupine) and a brute-force search over every order of tiny histories.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver.fuzz.checkers.linearizable import RegisterOp, check, register_ops
from driver.fuzz.checkers.synthetic import register_history
from driver.fuzz.history import History, Op, dump
from driver.fuzz.results import UNKNOWN, Results

REPO = Path(__file__).resolve().parent.parent


class H:
    """A tiny history builder: h.inv(p, "apply", "w", 1); h.ok(p); h.ok(q, 1) for a read."""

    def __init__(self) -> None:
        self.h = History()
        self.open: dict[int, Any] = {}

    def inv(self, p: int, f: str, key: str = "w", value: Any = None) -> int:
        self.open[p] = self.h.invoke(p, f, key, value)
        return int(self.open[p].index)

    def done(self, p: int, type: str, value: Any = None) -> int:
        return self.h.complete(self.open.pop(p), type, value).index  # type: ignore[arg-type]

    def ok(self, p: int, value: Any = None) -> int:
        return self.done(p, "ok", value)

    @property
    def ops(self) -> list[Op]:
        return self.h.ops


def test_linearizable_concurrent_write_and_reads() -> None:
    h = H()
    h.inv(0, "apply", "w", {"replicas": 1})
    h.ok(0, {"replicas": 1})
    h.inv(0, "scale", "w", {"replicas": 2})
    h.inv(1, "get")
    h.ok(1, {"replicas": 1})   # concurrent with the scale: may see the old value
    h.inv(2, "get")
    h.ok(2, {"replicas": 2})   # ... or the new one
    h.ok(0)
    h.inv(1, "get")
    h.ok(1, {"replicas": 2})
    h.inv(1, "delete")
    h.ok(1)
    h.inv(2, "get")
    h.ok(2, None)              # absent after the delete
    h.inv(0, "list", None)     # not a register operation: ignored
    h.ok(0, [])
    r = check(h.ops)
    assert r.valid is True and r.anomalies == ()
    assert r.detail["keys"] == 1 and r.detail["operations"] == 7


def test_stale_read_after_acknowledged_write() -> None:
    h = H()
    h.inv(0, "apply", "w", 1)
    h.ok(0)
    h.inv(0, "update", "w", 2)
    h.ok(0)
    inv = h.inv(1, "get")
    ok = h.ok(1, 1)  # 2 was acknowledged before this read began
    r = check(h.ops)
    assert r.valid is False
    (a,) = r.anomalies
    assert a.kind == "not-linearizable" and a.key == "w"
    assert {inv, ok} <= set(a.ops)
    assert a.detail["op"] == [inv, ok] and a.detail["state"] == 2
    assert "get -> 1" in a.message and "update(2)" in a.message


def test_read_of_a_value_never_written() -> None:
    h = H()
    h.inv(0, "apply", "w", {"image": "a"})
    h.inv(1, "get")
    h.ok(1, {"image": "b"})
    h.ok(0)
    r = check(h.ops)
    assert r.valid is False and r.anomalies[0].detail["op"] == [1, 2]


def test_lost_acknowledged_write() -> None:
    h = H()
    h.inv(0, "apply", "w", {"replicas": 3})
    h.ok(0)
    h.inv(0, "get")
    h.ok(0, None)  # the acknowledged apply is gone
    assert check(h.ops).valid is False
    # and a delete that was acknowledged but the workload is still there
    h = H()
    h.inv(0, "apply", "w", 1)
    h.ok(0)
    h.inv(1, "delete")
    h.ok(1)
    h.inv(0, "get")
    h.ok(0, 1)
    assert check(h.ops).valid is False


def test_info_write_that_may_have_happened_explains_a_later_read() -> None:
    h = H()
    h.inv(0, "apply", "w", 1)
    h.ok(0)
    h.inv(0, "update", "w", 2)
    h.done(0, "info")      # timed out: unknown whether it took effect
    h.inv(1, "get")
    h.ok(1, 1)             # not yet ...
    h.inv(1, "get")
    h.ok(1, 2)             # ... now it has: an info write may take effect any time later
    assert check(h.ops).valid is True
    # once it was seen, it happened: reading the old value afterwards is a violation
    h.inv(1, "get")
    h.ok(1, 1)
    assert check(h.ops).valid is False


def test_info_write_that_never_shows_up_is_fine() -> None:
    h = H()
    h.inv(0, "apply", "w", 1)
    h.ok(0)
    h.inv(0, "update", "w", 2)
    h.done(0, "info")
    h.inv(2, "update", "w", 3)  # never completes: also indeterminate
    for _ in range(3):
        h.inv(1, "get")
        h.ok(1, 1)
    assert check(h.ops).valid is True


def test_info_write_cannot_take_effect_before_its_invoke() -> None:
    h = H()
    h.inv(1, "get")
    h.ok(1, 2)
    h.inv(0, "update", "w", 2)
    h.done(0, "info")
    assert check(h.ops).valid is False


def test_failed_write_did_not_happen_and_info_reads_tell_nothing() -> None:
    h = H()
    h.inv(0, "apply", "w", 1)
    h.done(0, "fail")
    h.inv(1, "get")
    h.done(1, "info")   # dropped, whatever it carries
    h.inv(2, "get")
    h.ok(2, None)
    assert check(h.ops).valid is True
    h.inv(2, "get")
    h.ok(2, 1)          # the failed write must not be seen
    assert check(h.ops).valid is False


def test_keys_are_independent_registers() -> None:
    h = H()
    h.inv(0, "apply", "a", 1)
    h.ok(0)
    h.inv(0, "get", "b")
    h.ok(0, None)
    h.inv(1, "get", "a")
    h.ok(1, 1)
    r = check(h.ops)
    assert r.valid is True and r.detail["keys"] == 2


def _hard_key(h: H, key: str, writers: int) -> None:
    """All writers concurrent, then a read of a value nobody wrote: proving this not
    linearizable means trying every subset and order of the writes."""
    for p in range(writers):
        h.inv(100 + p, "update", key, p)
    h.inv(99, "get", key)
    h.ok(99, -1)
    for p in range(writers):
        h.ok(100 + p)


def test_time_limit_gives_unknown_naming_the_keys_not_finished() -> None:
    h = H()
    h.inv(0, "apply", "easy", 1)
    h.ok(0)
    _hard_key(h, "hard", 22)
    started = time.monotonic()
    r = check(h.ops, time_limit=0.3)
    assert time.monotonic() - started < 5  # bounded (generous: the machine is shared)
    assert r.valid == UNKNOWN
    assert r.detail["unfinished"] == ["hard"] and "hard" in r.detail["message"]
    # a violation elsewhere is still reported as a violation
    h.inv(1, "get", "easy")
    h.ok(1, 7)
    r = check(h.ops, time_limit=0.3)
    assert r.valid is False and [a.key for a in r.anomalies] == ["easy"]
    assert r.detail["unfinished"] == ["hard"]
    # and the per-key configuration bound gives unknown too, with its reason
    r = check(h.ops, time_limit=60, max_configs=5000)
    assert r.valid is False and "configs" in r.detail["message"]


def test_results_json_from_a_check(tmp_path: Path) -> None:
    h = H()
    h.inv(0, "apply", "w", 1)
    h.ok(0)
    h.inv(0, "get")
    h.ok(0, None)
    res = Results()
    res.add(check(h.ops))
    res.write(tmp_path / "results.json")
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["valid"] is False
    a = doc["checkers"]["linearizable"]["anomalies"][0]
    assert a["kind"] == "not-linearizable" and a["key"] == "w" and a["ops"] == [0, 1, 2, 3]


def test_large_history_is_checked_quickly() -> None:
    ops = register_history(random.Random(7), 20_000, processes=8, active_keys=12)
    started = time.monotonic()
    r = check(ops, time_limit=120)
    assert r.valid is True and r.detail["operations"] > 15_000
    assert time.monotonic() - started < 30  # ~0.2 s idle; generous for a loaded machine


# ------------------------------------------------------------------ cross-checks


def brute_force(ops: list[RegisterOp]) -> bool:
    """Linearizable iff some subset of the info writes plus every other operation has an
    order that respects real time and register semantics (tiny histories only)."""
    must = [o for o in ops if not o.info]
    maybe = [o for o in ops if o.info]

    def ends(o: RegisterOp) -> float:
        return float("inf") if o.info else float(o.complete)  # type: ignore[arg-type]

    for k in range(len(maybe) + 1):
        for chosen in itertools.combinations(maybe, k):
            chosen_ops = must + list(chosen)
            for order in itertools.permutations(chosen_ops):
                state: Any = None
                good = True
                for i, o in enumerate(order):
                    # nothing placed later may have returned before o was invoked
                    if any(ends(later) < o.invoke for later in order[i + 1:]):
                        good = False
                        break
                    if o.write:
                        state = o.value
                    elif o.value != state:
                        good = False
                        break
                if good:
                    return True
    return False


@pytest.fixture(scope="module")
def porcupine_bin() -> Path:
    out = subprocess.run([str(REPO / "scripts/build-porcupine.sh")], check=True,
                         capture_output=True, text=True, timeout=300)
    return Path(out.stdout.strip().splitlines()[-1])


def porcupine(binary: Path, ops: list[Op]) -> Any:
    with tempfile.TemporaryDirectory(prefix="shakedown-lin-") as tmp:
        path = Path(tmp) / "history.jsonl"
        dump(ops, path)
        out = subprocess.run([str(binary), "-timeout", "10s", str(path)], check=True,
                             capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)["valid"]


def mutate(ops: list[Op], rng: random.Random, values: int) -> list[Op]:
    """Change one ok read's answer or one write's value: often no longer linearizable."""
    candidates = [i for i, o in enumerate(ops)
                  if (o.type == "ok" and o.f == "get")
                  or (o.type == "invoke" and o.f in ("apply", "update", "scale"))]
    if not candidates:
        return ops
    i = rng.choice(candidates)
    v = rng.randrange(values + 1)
    new_value = None if v == values else {"image": "busybox", "replicas": v}
    out = list(ops)
    o = ops[i]
    out[i] = Op(index=o.index, type=o.type, process=o.process, f=o.f, key=o.key,
                value=new_value, time=o.time, node=o.node)
    return out


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), n=st.integers(1, 9), processes=st.integers(1, 4),
       keys=st.integers(1, 2), values=st.integers(1, 3), mutated=st.booleans())
def test_agrees_with_porcupine_and_brute_force(porcupine_bin: Path, rng: random.Random, n: int,
                                               processes: int, keys: int, values: int,
                                               mutated: bool) -> None:
    ops = register_history(rng, n, processes=processes, active_keys=keys,
                           info_ratio=0.2, fail_ratio=0.1, distinct_values=values)
    if mutated:
        ops = mutate(ops, rng, values)
    ours = check(ops, time_limit=10).valid
    if not mutated:
        assert ours is True  # linearizable by construction
    theirs = porcupine(porcupine_bin, ops)
    if theirs != UNKNOWN and ours != UNKNOWN:
        assert ours == theirs, [o.to_json() for o in ops]
    by_key = register_ops(ops)
    if all(len(v) <= 7 for v in by_key.values()):
        assert ours == all(brute_force(v) for v in by_key.values()), [o.to_json() for o in ops]


def test_porcupine_agrees_on_larger_histories(porcupine_bin: Path) -> None:
    seen = set()
    for seed in range(12):
        rng = random.Random(seed)
        ops = register_history(rng, 400, processes=6, active_keys=4, info_ratio=0.1,
                               distinct_values=3 if seed % 2 else None)
        if seed % 3:
            ops = mutate(ops, rng, 3)
        ours = check(ops, time_limit=20).valid
        theirs = porcupine(porcupine_bin, ops)
        assert ours == theirs, seed
        seen.add(ours)
    assert seen == {True, False}  # both verdicts were exercised


def test_one_hard_key_does_not_starve_the_others() -> None:
    h = H()
    _hard_key(h, "a-hard", 22)  # the smallest key: checked first
    for k in range(5):
        for i in range(15):
            h.inv(0, "update", f"easy-{k}", i)
            h.ok(0)
            h.inv(0, "get", f"easy-{k}")
            h.ok(0, i if k else i + 1)  # easy-0 reads what nobody wrote
    r = check(h.ops, time_limit=1.0)
    assert r.valid is False and r.detail["unfinished"] == ["a-hard"]
    assert [a.key for a in r.anomalies] == ["easy-0"]
