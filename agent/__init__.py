"""The Shakedown node agent: containers and faults on one node, over mTLS + HMAC gRPC."""

from importlib import metadata

try:
    __version__ = metadata.version("shakedown")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"
