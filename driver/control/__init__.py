"""Local components as processes recorded by PID (Jepsen's "control").

`process` starts/stops processes safely; `etcd` and `coredns` wrap the two
discovery components. Product code (`shakedown env`) and test fixtures share it.
"""

from driver.control.coredns import CoreDNSServer, find_coredns_binary, render_corefile, skydns_key
from driver.control.etcd import EtcdServer
from driver.control.process import ManagedProcess, alive, free_port, spawn, stop, wait_for

__all__ = [
    "CoreDNSServer",
    "EtcdServer",
    "ManagedProcess",
    "alive",
    "find_coredns_binary",
    "free_port",
    "render_corefile",
    "skydns_key",
    "spawn",
    "stop",
    "wait_for",
]
