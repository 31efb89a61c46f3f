"""System adapters: how suites and the fuzzer reach a system under test."""

from driver.adapters.base import (
    PHASES,
    RESTART_POLICIES,
    LabelsByName,
    Node,
    Port,
    Replica,
    SystemAdapter,
    Workload,
    WorkloadSpec,
)

__all__ = ["PHASES", "RESTART_POLICIES", "LabelsByName", "Node", "Port", "Replica",
           "SystemAdapter", "Workload", "WorkloadSpec"]
