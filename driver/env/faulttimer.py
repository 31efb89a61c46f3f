"""``python -m driver.env.faulttimer ENV_ROOT FAULT_ID``: heal one component fault when
its duration runs out.

A detached process of its own (driver/env/faults.py starts it), so the duration holds
even after the command that injected the fault has exited. Healing the fault by hand
stops this process; if it finds the fault already healed, or the environment gone, it
just exits.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    from driver.env import faults
    from driver.env.environment import Environment
    from driver.env.state import EnvError

    root, fault_id = Path(argv[0]), argv[1]
    while True:
        try:
            env = Environment.load(root.name, base=root.parent)
            record = faults.peek(env, fault_id)
        except (EnvError, OSError):
            return 0  # destroyed meanwhile
        if record is None or record.expires_at is None:
            return 0  # healed meanwhile
        left = record.expires_at - time.time()
        if left <= 0:
            break
        time.sleep(min(left, 60.0))  # the timer itself: nothing to poll for
    try:
        faults.heal(env, fault_id, "duration elapsed")
    except EnvError as exc:
        print(f"fault {fault_id}: heal at expiry failed: {exc}", file=sys.stderr)
        return 1
    print(f"fault {fault_id}: healed (duration elapsed)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
