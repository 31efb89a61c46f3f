"""Environments: a local cluster by default (etcd, CoreDNS, agents), or remote nodes.

See `Environment`; the CLI is `shakedown env ...`.
"""

from driver.env.cleanup import remove_docker_resources
from driver.env.environment import Environment
from driver.env.state import EnvError, EnvNotFound, default_base
from driver.env.status import ComponentStatus, EnvStatus

__all__ = [
    "ComponentStatus",
    "EnvError",
    "EnvNotFound",
    "EnvStatus",
    "Environment",
    "default_base",
    "remove_docker_resources",
]
