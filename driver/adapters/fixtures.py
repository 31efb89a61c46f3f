"""pytest fixtures for suites that drive a system under test through its adapter.

``system`` is the environment's adapter: ``env.adapter()`` for environments
that run a system (the local one with schedulers), or the factory named by
``--shakedown-adapter module:function`` (called with the environment), which
is how a user's own system plugs in. ``unique_name`` gives DNS-safe names
unique per run and test; ``system_usage`` samples the CPU time and memory of
the environment's processes.
"""

from __future__ import annotations

import importlib
import itertools
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from driver.adapters.base import SystemAdapter

_RUN = secrets.token_hex(3)
_counter = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shakedown")
    group.addoption("--shakedown-adapter", metavar="MODULE:FUNCTION", default=None,
                    help="factory(env) -> SystemAdapter for the system under test "
                         "(default: the environment's own)")
    group.addoption("--shakedown-perf-n", metavar="N", type=int, default=50,
                    help="concurrent Apply calls in the performance suite (default 50)")


def load_factory(spec: str) -> Callable[[Any], SystemAdapter]:
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise pytest.UsageError(f"--shakedown-adapter {spec!r}: want MODULE:FUNCTION")
    try:
        factory = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise pytest.UsageError(f"--shakedown-adapter {spec!r}: {exc}") from None
    return factory


@pytest.fixture(scope="session")
def system(shakedown_env: Any, pytestconfig: pytest.Config) -> Iterator[SystemAdapter]:
    """The system under test, through its adapter."""
    spec = pytestconfig.getoption("shakedown_adapter")
    adapter: SystemAdapter | None
    if spec:
        adapter = load_factory(spec)(shakedown_env)
    else:
        make = getattr(shakedown_env, "adapter", None)
        adapter = make() if make is not None else None
        if adapter is None:
            pytest.skip("this environment runs no system under test (no scheduler); "
                        "give one with --shakedown-adapter MODULE:FUNCTION")
    assert adapter is not None
    try:
        yield adapter
    finally:
        adapter.close()


@pytest.fixture()
def unique_name(request: pytest.FixtureRequest) -> str:
    """``sd-<run>-<n>``: lowercase, DNS-safe, unique per run and test."""
    return f"sd-{_RUN}-{next(_counter)}"


@pytest.fixture()
def perf_n(pytestconfig: pytest.Config) -> int:
    n = int(pytestconfig.getoption("shakedown_perf_n"))
    if n < 1:
        raise pytest.UsageError(f"--shakedown-perf-n {n}: want at least 1")
    return n


class Usage:
    """CPU seconds and peak RSS of the environment's processes between start and finish."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self._procs: dict[str, Any] = {}
        self._cpu0: dict[str, float] = {}
        for name, pid in pids.items():
            try:
                p = psutil.Process(pid)
                t = p.cpu_times()
                self._procs[name], self._cpu0[name] = p, t.user + t.system
            except psutil.Error:
                continue

    def finish(self) -> dict[str, dict[str, float]]:
        import psutil

        out = {}
        for name, p in self._procs.items():
            try:
                t = p.cpu_times()
                out[name] = {"cpu_s": round(t.user + t.system - self._cpu0[name], 2),
                             "rss_mb": round(p.memory_info().rss / 2**20, 1)}
            except psutil.Error:
                out[name] = {"cpu_s": float("nan"), "rss_mb": float("nan")}
        return out


@pytest.fixture()
def system_usage(shakedown_env: Any) -> Callable[[], Usage]:
    """``system_usage()`` starts sampling; ``.finish()`` gives per-process figures."""
    def start() -> Usage:
        pids = getattr(shakedown_env, "pids", None)
        return Usage(pids() if pids is not None else {})
    return start
