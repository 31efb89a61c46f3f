"""Service discovery through CoreDNS backed by etcd (the SkyDNS layout).

from driver.discovery import register, Resolver

with register("scheduler", "s1", "127.0.0.1", 7001, ttl=10,
              etcd="http://127.0.0.1:2379", domain="shakedown.test"):
    r = Resolver("shakedown.test", dns=("127.0.0.1", 1053), etcd="http://127.0.0.1:2379")
    print(r.resolve("scheduler").endpoints)
"""

from driver.discovery.resolver import (
    PATHS,
    Attempt,
    DiscoveryError,
    Endpoint,
    Resolution,
    Resolver,
    resolve,
)
from driver.discovery.watch import Change, DiscoveryWatch, watch
from shakedown.registry import Registration, RegistrationError, register
from shakedown.skydns import Record, domain_path, service_name, service_path

__all__ = [
    "PATHS",
    "Attempt",
    "Change",
    "DiscoveryError",
    "DiscoveryWatch",
    "Endpoint",
    "Record",
    "Registration",
    "RegistrationError",
    "Resolution",
    "Resolver",
    "domain_path",
    "register",
    "resolve",
    "service_name",
    "service_path",
    "watch",
]
