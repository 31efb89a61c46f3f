"""Bundled suites: pytest modules that test any environment through the plugin's fixtures.

Each `test_<name>.py` module is the suite `<name>` (and carries
`pytest.mark.suite("<name>")`). Run them with `shakedown env test NAME` or
`driver.suites.runner.run_suites()`, or directly:

    pytest --pyargs driver.suites --shakedown-env dev
"""

from pathlib import Path

SUITES_DIR = Path(__file__).resolve().parent


def known_suites() -> list[str]:
    return sorted(p.stem.removeprefix("test_") for p in SUITES_DIR.glob("test_*.py"))


__all__ = ["SUITES_DIR", "known_suites"]
