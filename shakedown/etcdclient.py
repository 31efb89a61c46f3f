"""Connecting to etcd from a URL, with errors that say which endpoint failed."""

from __future__ import annotations

from urllib.parse import urlsplit

import pyetcd


class EtcdUnavailable(ConnectionError):
    pass


def parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--etcd {url!r}: expected http://HOST:PORT")
    return parts.hostname, parts.port or 2379


def connect(url: str, timeout: float = 5.0) -> pyetcd.Etcd3Client:
    host, port = parse_url(url)
    return pyetcd.client(host=host, port=port, timeout=timeout)


def describe_error(url: str, exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if (
        "UNAVAILABLE" in text
        or "connect" in text.lower()
        or "ConnectionFailed" in type(exc).__name__
    ):
        return f"etcd unreachable at {url}"
    return f"etcd at {url}: {text.splitlines()[0][:200]}"
