"""The fuzz run's operation history (driver/fuzz/history.py) and results.json (results.py)."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from driver.fuzz.budget import Budget
from driver.fuzz.checkers.convergence import InvariantOutcome, convergence_result
from driver.fuzz.checks import convergence
from driver.fuzz.harness import Harness, Step
from driver.fuzz.history import (
    History,
    HistoryError,
    Op,
    iter_fault_periods,
    load,
    pairs,
)
from driver.fuzz.invariants import Violation
from driver.fuzz.model import Model
from driver.fuzz.results import UNKNOWN, Anomaly, CheckerResult, Results, combine


def test_round_trip_through_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "run" / "history.jsonl"
    with History(path) as h:
        t = h.invoke(0, "apply", "w-1", {"image": "busybox", "replicas": 2}, node="n1")
        h.complete(t, "ok", {"image": "busybox", "replicas": 2})
        h.nemesis_inject("f-0123456789ab", "partition", ["n1", "n2"], "n1 | n2")
        t = h.invoke(1, "get", "w-1", node="n2")
        h.complete(t, "info", error="deadline exceeded")
        h.nemesis_heal("all")
        h.invoke(2, "delete", "w-1")  # never completes: the run was cut off
        recorded = h.ops
    loaded = load(path)
    assert loaded == recorded
    assert [op.index for op in loaded] == list(range(len(loaded)))
    assert loaded[1].type == "ok" and loaded[1].value == {"image": "busybox", "replicas": 2}
    assert loaded[5].error == "deadline exceeded" and loaded[5].node == "n2"
    assert loaded[5].faults == ("f-0123456789ab",) and loaded[8].faults == ()
    # every line is the brief's form, with exactly its fields
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"index", "type", "process", "f", "key", "value", "time", "node",
                          "faults", "error"}
    assert pairs(loaded)[-1].complete is None and pairs(loaded)[-1].type == "info"


def test_each_line_is_on_disk_before_close(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    h = History(path)
    h.complete(h.invoke(0, "get", "w-1"), "ok", None)
    assert len(load(path)) == 2  # flushed per line: a crash now would keep both
    h.close()


def test_truncated_last_line_is_dropped_other_bad_lines_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with History(path) as h:
        h.complete(h.invoke(0, "get", "w-1"), "ok", None)
    good = path.read_text()
    path.write_text(good + '{"index": 2, "type": "inv')  # died while writing
    assert len(load(path)) == 2
    path.write_text(good + '{"index": 2, "type": "begin", "process": 0, "f": "get"}\n')
    with pytest.raises(HistoryError, match=r":3: field 'type'"):
        load(path)
    path.write_text(good + '{"index": 7, "type": "invoke", "process": 0, "f": "get"}\n')
    with pytest.raises(HistoryError, match=r"field 'index' is 7, expected 2"):
        load(path)
    with pytest.raises(HistoryError, match="field 'process'"):
        Op.from_json({"index": 0, "type": "ok", "process": -1, "f": "get"})


def test_concurrent_recording_keeps_per_process_order(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    threads, per_thread = 8, 200
    barrier = threading.Barrier(threads)
    with History(path) as h:
        def worker(p: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                t = h.invoke(p, "update", f"w-{p}", i, node=f"n{p}")
                h.complete(t, "ok", i)
        pool = [threading.Thread(target=worker, args=(p,)) for p in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        ops = h.ops
    assert len(ops) == threads * per_thread * 2
    assert [op.index for op in ops] == list(range(len(ops)))
    assert all(a.time <= b.time for a, b in itertools.pairwise(ops))
    assert load(path) == ops  # file order = index order
    for p in range(threads):
        mine = [op for op in ops if op.process == p]
        assert [op.type for op in mine] == ["invoke", "ok"] * per_thread
        assert [op.value for op in mine] == [i for i in range(per_thread) for _ in (0, 1)]
    paired = pairs(ops)
    assert all(pr.complete is not None and pr.complete.value == pr.invoke.value
               and pr.complete.process == pr.invoke.process for pr in paired)
    # the threads really interleaved (else this test would prove nothing about the lock)
    assert len({op.process for op in ops[: per_thread * 2]}) > 1


def test_one_operation_at_a_time_per_process() -> None:
    h = History()
    t = h.invoke(0, "get", "w-1")
    with pytest.raises(HistoryError, match="already has operation 0 open"):
        h.invoke(0, "get", "w-2")
    h.complete(t, "ok", None)
    with pytest.raises(HistoryError, match="not open"):
        h.complete(t, "ok", None)
    with pytest.raises(HistoryError, match="field 'type'"):
        h.complete(h.invoke(1, "get", "w-1"), "invoke")  # type: ignore[arg-type]
    with pytest.raises(HistoryError, match="field 'value'"):
        History().invoke(2, "apply", "w-1", {1, 2})


def test_active_faults_follow_inject_and_heal() -> None:
    h = History()
    h.nemesis_inject("f-a", "partition", ["n1"], "n1 alone")
    a = h.invoke(0, "get", "w-1")
    h.nemesis_inject("f-b", "pause", ["etcd"], "etcd paused")
    h.complete(a, "ok", None)
    h.nemesis_heal("f-a")
    b = h.invoke(0, "get", "w-1")
    h.nemesis_heal("all")
    c = h.invoke(1, "get", "w-1")
    ops = h.ops
    assert ops[1].faults == ("f-a",)           # the inject ok lists its own fault
    assert ops[2].faults == ("f-a",)
    assert ops[5].faults == ("f-a", "f-b")
    assert ops[b.index].faults == ("f-b",)
    assert ops[c.index].faults == () and h.active_faults == ()
    periods = {fid: (inj.index, heal.index if heal else None)
               for fid, inj, heal in iter_fault_periods(ops)}
    assert periods == {"f-a": (1, 7), "f-b": (4, 10)}
    with pytest.raises(HistoryError, match="needs value"):
        h.complete(h.invoke("nemesis", "inject", None, {}), "ok", {"kind": "partition"})


def test_pairs_rejects_a_completion_without_invoke() -> None:
    ok = Op(index=0, type="ok", process=3, f="get", key="w-1")
    with pytest.raises(HistoryError, match="completes no open invoke"):
        pairs([ok])


def test_results_validity_aggregation(tmp_path: Path) -> None:
    assert combine([True, True]) is True
    assert combine([True, UNKNOWN]) == UNKNOWN
    assert combine([UNKNOWN, False, True]) is False
    assert combine([]) == UNKNOWN  # nothing checked proves nothing

    r = Results()
    r.add(CheckerResult("linearizable", True, elapsed=0.5, detail={"keys": 3}))
    assert r.valid is True
    r.add(CheckerResult("convergence", UNKNOWN))
    assert r.valid == UNKNOWN
    lost = Anomaly("lost-write", "apply of w-1 never reflected", key="w-1", ops=(4, 9))
    r.add(CheckerResult("other", False, anomalies=(lost,)))
    assert r.valid is False
    with pytest.raises(ValueError, match="already has a result"):
        r.add(CheckerResult("other", True))
    with pytest.raises(ValueError, match="field 'valid'"):
        CheckerResult("x", 1)  # type: ignore[arg-type]

    path = tmp_path / "results.json"
    r.write(path)
    doc = json.loads(path.read_text())
    assert doc["valid"] is False
    assert doc["checkers"]["linearizable"] == {"keys": 3, "valid": True, "anomalies": [],
                                               "elapsed": 0.5}
    assert doc["checkers"]["other"]["anomalies"] == [
        {"kind": "lost-write", "message": "apply of w-1 never reflected", "key": "w-1",
         "ops": [4, 9]}]
    assert Results.load(path).to_json() == doc


def test_convergence_result() -> None:
    ok = convergence_result([InvariantOutcome("no-orphans", True),
                             InvariantOutcome("views-agree", True)])
    assert ok.valid is True and ok.anomalies == ()
    bad = convergence_result([InvariantOutcome("no-orphans", True),
                              InvariantOutcome("no-lost-write", False, "w-3 missing",
                                               ops=(10, 11), key="w-3"),
                              InvariantOutcome("views-agree", None, "scheduler unreachable")])
    assert bad.valid is False
    assert [(a.kind, a.key, a.ops) for a in bad.anomalies] == [("no-lost-write", "w-3", (10, 11))]
    assert bad.detail["unknown"] == ["views-agree"]
    assert convergence_result([InvariantOutcome("views-agree", None)]).valid == UNKNOWN
    assert convergence_result([]).valid == UNKNOWN


def test_a_refused_completion_changes_nothing() -> None:
    h = History()
    t = h.invoke(0, "get", "w-1")
    with pytest.raises(HistoryError, match="field 'value'"):
        h.complete(t, "ok", float("nan"))
    assert len(h) == 1
    h.complete(t, "ok", None)  # still open: the refused completion was not recorded
    assert [op.type for op in h.ops] == ["invoke", "ok"]


def test_a_leak_is_reported_as_its_kind_with_the_examples_ops_shortest_first() -> None:
    # The CI failure this pins: "leak: left after ..." became kind "leak:" with no ops,
    # and the reported (shortest) failure was not the first anomaly.
    hist = History()
    model = Model(prefix="fz-t-1", may_end={"w0": {None}, "w1": {None}})
    for key in ("fz-t-1-w0", "fz-t-1-w1", "fz-other-w0"):
        hist.complete(hist.invoke(0, "apply", key, {"replicas": 1}), "ok")
    h = Harness(system=cast(Any, None), agents=dict, nemesis=cast(Any, None), history=hist,
                image="x", run_id="t", budget=Budget(60.0))
    h.steps = [Step("start", {}), Step("apply", {}), Step("converge", {})]
    h.record_violations([Violation("leak", "", "left after the delete: c1")], model)
    h.steps = [Step("start", {})]
    h.record_violations([Violation("lost-write", "w1", "is r1v1, acknowledged r1v2")], model)
    assert [v.kind for v in h.failures[0].found] == ["leak"]
    assert {hist.ops[i].key for i in h.failures[0].ops} == {"fz-t-1-w0", "fz-t-1-w1"}
    assert {hist.ops[i].key for i in h.failures[1].ops} == {"fz-t-1-w1"}
    result = convergence(h.failures, None)
    assert [a.kind for a in result.anomalies] == ["lost-write", "leak"]
    assert result.anomalies[0].detail["steps"] == 1 and result.anomalies[1].ops
    assert result.valid is False
