"""The environment's component faults (driver/env/faults.py), as the nemesis asks for them.

Only a local environment runs its components itself; which component kinds a run
may draw follows from what it runs: agents, scheduler replicas, etcd, CoreDNS.
"""

from __future__ import annotations

from typing import Any

# The nemesis's kinds -> what the environment must run for them.
_NEEDS = {"agent-stop": "agent", "leader-kill": "scheduler", "leader-pause": "scheduler",
          "etcd-pause": "etcd", "coredns-stop": "coredns"}


class EnvComponents:
    def __init__(self, env: Any) -> None:
        self.env = env
        running = {c.kind for c in env.state.components.values()}
        self.kinds = tuple(k for k, need in _NEEDS.items() if need in running)

    @classmethod
    def of(cls, env: Any) -> EnvComponents | None:
        state = getattr(env, "state", None)
        if state is None or getattr(state, "kind", "") != "local":
            return None
        return cls(env)

    def inject(self, kind: str, component: str, *, duration: int = 0) -> str:
        from driver.env.faults import inject

        return inject(self.env, kind, component, duration=duration).id

    def heal(self, fault_id: str) -> None:
        from driver.env.faults import heal

        heal(self.env, fault_id, "fuzz")

    def restart_schedulers(self) -> list[str]:
        """Every scheduler replica stopped and started again: fresh processes, so what a
        leader kill or pause did to one (a buggy leader that never stepped down) cannot
        leak into the next example. Their state is in etcd and survives, as it must."""
        from driver.env.state import save_state

        done = []
        for comp in self.env.state.schedulers():
            proc = comp.managed()
            if proc is not None and proc.alive():
                proc.stop(timeout=15)
            comp.process = None
            self.env.revive(comp.name)
            done.append(comp.name)
        save_state(self.env.paths, self.env.state)
        return done
