"""The agent registers itself in discovery (CoreDNS via etcd) while it serves.

The record is bound to a lease the agent keeps alive, so when the agent dies
its record expires with it: discovery never points at a dead agent for longer
than the lease. etcd being down at start-up (or later) is not fatal: the
registrar retries, and re-registers when a lease is lost.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

log = logging.getLogger("shakedown.agent.registration")
SERVICE = "shakedown-agent"


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    etcd: str
    domain: str
    host: str
    service: str = SERVICE
    ttl: int = 10


class Registrar:
    def __init__(
        self, config: RegistrationConfig, instance: str, port: int, retry_interval: float = 2.0
    ) -> None:
        self.config, self.instance, self.port = config, instance, port
        self.retry_interval = retry_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="shakedown-registrar")
        self.registration: object | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from shakedown.registry import RegistrationError, register

        c = self.config
        while not self._stop.is_set():
            try:
                reg = register(
                    c.service, self.instance, c.host, self.port, c.ttl, etcd=c.etcd, domain=c.domain
                )
            except (RegistrationError, ValueError) as exc:
                log.warning(
                    "registration failed; retrying",
                    extra={"fields": {"etcd": c.etcd, "error": str(exc)}},
                )
                self._stop.wait(self.retry_interval)
                continue
            self.registration = reg
            log.info(
                "registered in discovery",
                extra={"fields": {"key": reg.key, "service": c.service, "domain": c.domain}},
            )
            while not self._stop.wait(0.5):
                if reg.lost.is_set():
                    log.warning(
                        "registration lease lost; registering again",
                        extra={"fields": {"key": reg.key}},
                    )
                    break
            reg.deregister()
            self.registration = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
