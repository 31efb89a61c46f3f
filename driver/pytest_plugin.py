"""pytest plugin (`pytest11` entry point `shakedown`): environments as fixtures.

    pytest --shakedown-env dev tests/e2e            # a local env (`shakedown env create dev`)
    pytest --shakedown-inventory nodes.toml ...     # already-running agents, no env dir

Options (defaults from SHAKEDOWN_ENV / SHAKEDOWN_INVENTORY): `--shakedown-env`,
`--shakedown-inventory`, `--shakedown-base` (where envs live),
`--shakedown-missing {skip,error}` (what a test needing an environment does
when none is given), `--shakedown-ttl` (context session TTL).

Fixtures: `shakedown_env` (session), `agents` (node -> AgentClient), `ctx`
(an isolated `TestContext` per test, named after it, on the nodes that are up),
`shakedown_image` (session: the busybox test image, built on the *local* engine
only, so with remote nodes it must already exist there), `shakedown_node`
(parametrizes a test over the environment's nodes). Markers: `shakedown`,
`suite(name)`, `slow`.

Under pytest-xdist (`-n 4`) every worker has its own clients and contexts; the
workers of one run share its run id (xdist's testrunuid, the `shakedown.run`
label with an inventory) and each context also carries `shakedown.worker`
(gw0, gw1 ...), so a worker's containers are told apart from the others'.

A node that is down (probed once per run, on first need) does not take the
others' tests with it: its own `shakedown_node` tests are skipped, or with
`--shakedown-missing error` fail, with one line saying why; `ctx` leaves it out.

The plugin loads in every pytest run of an installation: with no
`--shakedown-*` option it changes nothing, and it imports the driver lazily.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from driver.client import AgentClient
    from driver.env.context import TestContext

# The system under test (adapter), dynamic-client and report (scenario_metric) fixtures
# live with their concepts.
pytest_plugins = ["driver.adapters.fixtures", "driver.dynamic.fixtures",
                  "driver.reports.summary"]

# `agents` and `ctx` depend on `shakedown_env`, so it is in their closure; a project's
# own fixture of the same name (which overrides ours) does not pull it in.
ENV_FIXTURES = frozenset({"shakedown_env", "shakedown_node"})
NODES_KEY = pytest.StashKey[list[str]]()
PROBE_TIMEOUT_S = 5.0  # a node that does not answer GetNodeInfo within this is down
WORKER_LABEL = "shakedown.worker"
MISSING_HELP = (
    "no Shakedown environment: pass --shakedown-env NAME or --shakedown-inventory FILE "
    "(or set SHAKEDOWN_ENV / SHAKEDOWN_INVENTORY)"
)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which environment the options name (at most one of env / inventory)."""

    env: str | None
    inventory: Path | None
    base: Path | None
    missing: str
    ttl: int

    @property
    def given(self) -> bool:
        return bool(self.env or self.inventory)

    def describe(self) -> str:
        return f"inventory {self.inventory}" if self.inventory else f"environment {self.env}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shakedown", "Shakedown environments")
    group.addoption("--shakedown-env", metavar="NAME", default=None,
                    help="run against this environment (default: $SHAKEDOWN_ENV)")
    group.addoption("--shakedown-inventory", metavar="FILE", default=None,
                    help="run against the agents of this inventory, no environment dir "
                         "needed (default: $SHAKEDOWN_INVENTORY)")
    group.addoption("--shakedown-base", metavar="DIR", default=None,
                    help="where environments live (default: $SHAKEDOWN_HOME/envs or "
                         "~/.local/share/shakedown/envs)")
    group.addoption("--shakedown-missing", choices=("skip", "error"), default="skip",
                    help="when no environment is given, skip (default) or fail the tests "
                         "that need one")
    group.addoption("--shakedown-ttl", metavar="SECONDS", type=int, default=30,
                    help="session TTL of each test context: the agents reap a dead "
                         "driver's containers after it (default 30)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shakedown: needs a Shakedown environment "
                            "(--shakedown-env / --shakedown-inventory)")
    config.addinivalue_line("markers", "suite(name): the Shakedown suite a test belongs to")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    sel = selection(config)
    if not sel.given:
        return
    if sel.env and sel.inventory:
        raise pytest.UsageError(
            "--shakedown-env and --shakedown-inventory (or SHAKEDOWN_ENV and "
            "SHAKEDOWN_INVENTORY) are exclusive: give one")
    try:  # config files only, no connection: a wrong name fails fast and once
        config.stash[NODES_KEY] = _node_names(sel)
    except Exception as exc:
        raise pytest.UsageError(f"{sel.describe()}: {exc}") from None


def selection(config: pytest.Config) -> Selection:
    def opt(name: str, env_var: str | None = None) -> Any:
        value = config.getoption(name, default=None)
        return value if value is not None or env_var is None else os.environ.get(env_var) or None

    env, inventory, base = opt("shakedown_env", "SHAKEDOWN_ENV"), \
        opt("shakedown_inventory", "SHAKEDOWN_INVENTORY"), opt("shakedown_base")
    return Selection(env, Path(inventory) if inventory else None, Path(base) if base else None,
                     opt("shakedown_missing") or "skip", opt("shakedown_ttl") or 30)


def _needs_env(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return item.get_closest_marker("shakedown") is not None or bool(ENV_FIXTURES & set(names))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    sel = selection(config)
    if sel.given:
        return
    needing = [i for i in items if _needs_env(i)]
    if not needing:
        return  # the common case in a repo's own tests: no effect at all
    if sel.missing == "error":
        raise pytest.UsageError(f"{len(needing)} test(s) need an environment, e.g. "
                                f"{needing[0].nodeid}: {MISSING_HELP}")
    for item in needing:
        item.add_marker(pytest.mark.skip(reason=MISSING_HELP))


def _node_names(sel: Selection) -> list[str]:
    """Node names for parametrizing, read from config only (no connection)."""
    from driver.inventory import load_inventory

    if sel.inventory:
        return load_inventory(sel.inventory).names
    from driver.env import Environment

    return Environment.load(str(sel.env), base=sel.base).inventory().names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "shakedown_node" not in metafunc.fixturenames:
        return
    names = metafunc.config.stash.get(NODES_KEY, [])
    # indirect: the `shakedown_node` fixture checks that the node is up.
    metafunc.parametrize("shakedown_node", names or [pytest.param(
        None, marks=pytest.mark.skip(reason=MISSING_HELP))], ids=lambda n: str(n),
        indirect=True)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def shakedown_env(pytestconfig: pytest.Config,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The `Environment` (or, with an inventory, an `InventoryEnv`) under test."""
    sel = selection(pytestconfig)
    if not sel.given:
        if sel.missing == "error":
            pytest.fail(MISSING_HELP, pytrace=False)
        pytest.skip(MISSING_HELP)
    env: Any
    try:
        if sel.inventory:
            from driver.env.context import InventoryEnv

            # One run id for every xdist worker of the run (each would draw its own).
            env = InventoryEnv(sel.inventory, temp_root=tmp_path_factory.mktemp("shakedown-ctx"))
            uid = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:8]
            if uid:
                env.run_id = uid
        else:
            from driver.env import Environment

            env = Environment.load(str(sel.env), base=sel.base)
    except Exception as exc:  # EnvNotFound, InventoryError: the message says what to do
        pytest.fail(f"{sel.describe()}: {exc}", pytrace=False)
    try:
        yield env
    finally:
        env.close()


@pytest.fixture(scope="session")
def shakedown_down(shakedown_env: Any) -> dict[str, str]:
    """node -> why it is down, for the nodes that did not answer a probe (once per run)."""
    from driver.cli.agentconn import explain
    from driver.fanout import fan_out
    from shakedown.errors import ShakedownError

    clients = shakedown_env.clients()
    results = fan_out(clients, lambda c: c.node_info(timeout=PROBE_TIMEOUT_S),
                      timeout=PROBE_TIMEOUT_S + 5)
    return {n: (explain(clients[n], e, PROBE_TIMEOUT_S) if isinstance(e, ShakedownError)
                else f"agent {n}: {type(e).__name__}: {e}")
            for n, e in results.failed.items()}


@pytest.fixture()
def shakedown_node(request: pytest.FixtureRequest, shakedown_down: dict[str, str]) -> str:
    """The node this test runs for; a node that is down fails or skips it in one line."""
    node = str(request.param)
    reason = shakedown_down.get(node)
    if reason is not None:
        # E.g. "agent dev-n2 (127.0.0.1:40729) is unreachable: connection refused".
        if selection(request.config).missing == "error":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return node


@pytest.fixture()
def agents(shakedown_env: Any) -> dict[str, AgentClient]:
    """node name -> AgentClient (the environment's shared, thread-safe clients)."""
    return dict(shakedown_env.clients())


@pytest.fixture()
def ctx(shakedown_env: Any, request: pytest.FixtureRequest,
        pytestconfig: pytest.Config) -> Iterator[TestContext]:
    """An isolated context named after the test, on the nodes that are up.

    Its containers and temp dir go at teardown.
    """
    from driver.env.context import open_context

    if "shakedown_node" in request.fixturenames:
        request.getfixturevalue("shakedown_node")  # this test's node down: say so first
    down: dict[str, str] = request.getfixturevalue("shakedown_down")
    live = [n for n in shakedown_env.clients() if n not in down]
    if not live:
        pytest.fail("every node is down: " + "; ".join(down.values()), pytrace=False)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    with open_context(shakedown_env, request.node.nodeid, ttl=selection(pytestconfig).ttl,
                      nodes=live, labels={WORKER_LABEL: worker} if worker else None) as context:
        yield context


@pytest.fixture(scope="session")
def shakedown_image() -> str:
    """The busybox test image, built on the local engine (remote nodes need it already)."""
    from driver.images import ensure_busybox_image

    return ensure_busybox_image()
