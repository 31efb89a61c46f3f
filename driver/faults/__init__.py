"""Faults, driver side: typed specs and records (types.py), partition shapes computed
from names (shapes.py), and the AgentClient calls that inject and heal (client.py)."""

from driver.faults.client import heal_all, heal_fault, inject_fault, list_faults, update_toxics
from driver.faults.types import Fault, FaultSpec, Toxic

__all__ = ["Fault", "FaultSpec", "Toxic", "heal_all", "heal_fault", "inject_fault", "list_faults",
           "update_toxics"]
