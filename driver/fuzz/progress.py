"""The live progress line of `shakedown fuzz`, with rich: examples, steps, faults, budget."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, budget_s: float, *, enabled: bool = True) -> None:
        self.budget_s = budget_s
        self.enabled = enabled
        self._bar: RichProgress | None = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._bar = RichProgress(
                TextColumn("[bold]fuzz[/]"), BarColumn(), TimeElapsedColumn(),
                TextColumn(f"/ {self.budget_s:g} s"), TextColumn("{task.description}"),
                console=Console(stderr=True), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("starting", total=self.budget_s)
        return self

    def update(self, harness: Any) -> None:
        if self._bar is None:
            return
        check = harness.last_check[0] if harness.last_check else "none yet"
        self._bar.update(self._task, completed=min(harness.budget.elapsed(), self.budget_s),
                         description=f"examples {harness.examples}  steps "
                         f"{harness.steps_total}  faults {len(harness.nemesis.active)}  "
                         f"last check: {check[:60]}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
