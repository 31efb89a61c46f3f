"""The replay artifact of a failure, and the program it prints as.

``replay.json`` holds what is needed to run the failing example again without
Hypothesis: the environment, the seed, the fault kinds the run could draw, the
convergence window and the steps (rule and arguments) in order. The program is
the same steps as Python a user can paste and run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from driver.fuzz.harness import DEFAULT_WINDOW, Step

FORMAT = "shakedown-fuzz-replay/1"


@dataclass
class Artifact:
    env: str
    seed: int
    steps: list[Step]
    window: float = DEFAULT_WINDOW
    kinds: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def save(self, path: Path) -> Path:
        doc = {"format": FORMAT, **asdict(self)}
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Artifact:
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a replay artifact: {exc}") from None
        if doc.get("format") != FORMAT:
            raise ValueError(f"{path}: format {doc.get('format')!r}, want {FORMAT!r}")
        try:
            steps = [Step(s["rule"], dict(s["args"])) for s in doc["steps"]]
            return cls(env=str(doc["env"]), seed=int(doc["seed"]), steps=steps,
                       window=float(doc.get("window", DEFAULT_WINDOW)),
                       kinds=list(doc.get("kinds", [])), violations=list(doc.get("violations", [])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: field {exc} is missing or malformed") from None


def render_program(art: Artifact) -> str:
    lines = [
        f"# The shrunk failure of seed {art.seed} on environment {art.env!r}: "
        f"{len(art.steps)} step(s).",
        *(f"# violated: {v}" for v in art.violations[:5]),
        "# `shakedown fuzz --replay replay.json` runs it 5 times and reports the flake rate.",
        "from driver.fuzz.replay import machine_for",
        "",
        f"state = machine_for({art.env!r}, kinds={art.kinds!r}, window={art.window!r})",
        *(s.call() for s in art.steps),
        "state.teardown()",
    ]
    return "\n".join(lines) + "\n"
