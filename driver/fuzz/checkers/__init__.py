"""Checkers that judge a fuzz run after the fact, each producing a `CheckerResult`:
`linearizable` (the workload registry, one register per key, from history.jsonl) and
`convergence` (the post-run invariants the state machine evaluated). `synthetic` makes
register histories that are linearizable by construction, for tests and benchmarks."""

from driver.fuzz.results import Anomaly, CheckerResult

__all__ = ["Anomaly", "CheckerResult"]
