"""Removing what a local environment left in Docker: its nodes' containers, networks and
dead claim volumes, selected by label, so nobody else's are touched."""

from __future__ import annotations

from typing import Any


def remove_docker_resources(nodes: list[str]) -> int:
    """Containers, networks (by label) and dead claim volumes of these nodes: nobody else's."""
    import docker

    try:
        client = docker.from_env()
    except docker.errors.DockerException:
        return 0
    removed = 0
    try:
        for node in nodes:
            selector = {"label": f"io.shakedown.node={node}"}
            for c in client.containers.list(all=True, filters=selector):
                c.remove(force=True)
                removed += 1
            for n in client.networks.list(filters=selector):
                n.remove()
                removed += 1
            removed += _remove_dead_claim(client, node)
    finally:
        client.close()
    return removed


def _remove_dead_claim(client: Any, node: str) -> int:
    """A SIGKILLed agent leaves its engine claim volume: remove it, unless a live agent holds it."""
    import socket

    import docker

    from agent.claim import CLAIM, Holder, holder_alive, volume_name

    try:
        volume = client.volumes.get(volume_name(node))
    except docker.errors.NotFound:
        return 0
    labels = dict(volume.attrs.get("Labels") or {})
    if labels.get(CLAIM) != node:
        return 0  # not a claim of ours, whatever its name says
    if holder_alive(Holder.from_labels(labels), node, this_host=socket.gethostname()):
        return 0
    try:
        volume.remove(force=True)
    except docker.errors.NotFound:
        return 0
    return 1
