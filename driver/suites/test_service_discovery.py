"""Suite service_discovery: agents and the system's replicas are found through CoreDNS, and
`verify discovery` is clean.

Agents register themselves (`_shakedown-agent._tcp.<domain>`, leased in etcd)
once they serve, so the suite polls for the SRV answer with a deadline.
Skipped for an environment without DNS/etcd (e.g. an inventory of remote agents).
"""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import Any

import pytest

from driver.control.process import wait_for
from driver.discovery.resolver import DiscoveryError, Endpoint, Resolver, parse_hostport
from driver.verify.discovery import verify_discovery

pytestmark = [pytest.mark.shakedown, pytest.mark.suite("service_discovery")]
SERVICE = "shakedown-agent"
DEADLINE_S = 30.0  # > the agents' registration retry interval and lease TTL


@pytest.fixture(scope="module")
def dns_env(shakedown_env: Any) -> Any:
    if not (getattr(shakedown_env, "dns", None) and getattr(shakedown_env, "etcd", None)):
        pytest.skip(f"environment {shakedown_env.name} has no DNS/etcd (remote or "
                    "inventory-only): nothing to discover")
    return shakedown_env


def srv_endpoints(env: Any) -> dict[str, Endpoint]:
    """address -> endpoint, as a client of the domain sees them now."""
    resolver = Resolver(env.domain, parse_hostport(env.dns, "dns"), order=("srv",))
    try:
        return {e.address: e for e in resolver.resolve(SERVICE, fresh=True).endpoints}
    except DiscoveryError:
        return {}


@pytest.fixture(scope="module")
def resolved(dns_env: Any) -> dict[str, Endpoint]:
    """The SRV answer once it lists every agent of the inventory (polled with a deadline)."""
    expected = {n.address for n in dns_env.inventory().nodes}
    deadline = time.monotonic() + DEADLINE_S
    found = srv_endpoints(dns_env)
    while not expected <= set(found) and time.monotonic() < deadline:
        time.sleep(0.1)
        found = srv_endpoints(dns_env)
    missing = expected - set(found)
    assert not missing, f"SRV _{SERVICE}._tcp.{dns_env.domain}: missing {sorted(missing)}"
    return found


def test_every_agent_resolves_via_srv(dns_env: Any, resolved: dict[str, Endpoint]) -> None:
    for endpoint in resolved.values():
        assert endpoint.port > 0 and endpoint.target.rstrip(".").endswith(
            dns_env.domain.rstrip(".")), endpoint


def test_resolved_endpoint_is_the_agent(dns_env: Any, resolved: dict[str, Endpoint],
                                        shakedown_node: str) -> None:
    node = dns_env.inventory().node(shakedown_node)
    endpoint = resolved[node.address]
    # Connect where DNS points (same identity and keys) and ask who answers.
    with dataclasses.replace(node, address=endpoint.address).client() as client:
        assert client.node_info().name == shakedown_node


def test_verify_discovery_reports_no_errors(dns_env: Any) -> None:
    certs = dns_env.paths.certs if hasattr(dns_env, "paths") else None
    report = verify_discovery(dns_env.dns, dns_env.etcd, dns_env.domain, service=SERVICE,
                              certs=certs)
    assert report.ok, "\n".join(f"{f.code}: {f.message}" for f in report.errors)
    assert not report.errors


def test_every_replica_of_the_system_is_returned(dns_env: Any, system: Any) -> None:
    """Several replicas are all in the SRV answer, each one a replica that answers."""
    endpoints = getattr(system, "endpoints", None)
    components = getattr(getattr(dns_env, "state", None), "components", {})
    running = {f"127.0.0.1:{c.ports['grpc']}" for c in components.values()
               if getattr(c, "kind", "") == "scheduler" and c.managed() and c.managed().alive()}
    if endpoints is None or not running:
        pytest.skip("no replicated system API in this environment")
    resolver = Resolver(dns_env.domain, parse_hostport(dns_env.dns, "dns"), order=("srv",))
    deadline = time.monotonic() + DEADLINE_S
    found: set[str] = set()
    while time.monotonic() < deadline:
        try:
            found = {e.address for e in resolver.resolve("scheduler", fresh=True).endpoints}
        except DiscoveryError:
            found = set()
        if found == running:
            break
        time.sleep(0.1)
    assert found == running, f"SRV _scheduler._tcp: {sorted(found)}, running: {sorted(running)}"
    assert len(found) >= 2 or len(running) < 2
    report = verify_discovery(dns_env.dns, dns_env.etcd, dns_env.domain, service="scheduler",
                              certs=getattr(dns_env, "paths", None) and dns_env.paths.certs)
    assert report.ok, "\n".join(f"{f.code}: {f.message}" for f in report.errors)


def test_static_fallback_while_coredns_is_down(dns_env: Any) -> None:
    """With CoreDNS frozen, a resolver configured with a static list still finds every agent."""
    if not hasattr(dns_env, "signal"):
        pytest.skip("this environment cannot stop its components (not a local one)")
    static = {SERVICE: sorted(n.address for n in dns_env.inventory().nodes)}
    resolver = Resolver(dns_env.domain, parse_hostport(dns_env.dns, "dns"),
                        order=("srv", "static"), static=static, timeout=1.0)
    dns_env.signal("coredns", signal.SIGSTOP)
    try:
        res = resolver.resolve(SERVICE, fresh=True)
    finally:
        dns_env.signal("coredns", signal.SIGCONT)
    assert res.path == "static", res.attempts
    assert sorted(e.address for e in res.endpoints) == static[SERVICE]
    assert [a.path for a in res.attempts] == ["srv", "static"] and not res.attempts[0].ok
    # Once CoreDNS is back, SRV answers again.
    wait_for(lambda: srv_endpoints(dns_env), DEADLINE_S, what="SRV answers after CoreDNS is back")


def test_a_replica_restarted_on_a_new_port_is_found_again(dns_env: Any, system: Any) -> None:
    """A crashed replica restarted elsewhere: within the lease TTL, DNS gives the new port
    and no longer the old one."""
    if not hasattr(dns_env, "relaunch_on_new_port") or getattr(system, "endpoints", None) is None:
        pytest.skip("this environment cannot restart its system's replicas")
    comps = [c for c in dns_env.state.components.values() if c.kind == "scheduler"]
    if not comps:
        pytest.skip("no scheduler replica in this environment")
    comp = comps[-1]
    old = f"127.0.0.1:{comp.ports['grpc']}"
    started = time.monotonic()
    new = f"127.0.0.1:{dns_env.relaunch_on_new_port(comp.name)}"
    resolver = Resolver(dns_env.domain, parse_hostport(dns_env.dns, "dns"), order=("srv",))

    def moved() -> bool:
        try:
            found = {e.address for e in resolver.resolve("scheduler", fresh=True).endpoints}
        except DiscoveryError:
            return False
        return new in found and old not in found
    wait_for(moved, LEASE_S + 5, interval=0.2, what=f"SRV to move {old} -> {new}")
    assert time.monotonic() - started <= LEASE_S + 5
    assert new in system.endpoints()


LEASE_S = 10.0  # the scheduler's etcd lease TTL
