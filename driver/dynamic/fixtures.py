"""pytest: ``dynamic_client(target)`` returns a DynamicClient, closed at teardown.

``target`` is a node name of the environment's inventory (the client then
uses that node's certificates and signs with its keyring, so agent calls go
through) or any HOST:PORT, reached with the first node's PKI, unsigned unless
``sign=True``. ``plaintext=True`` skips TLS, for services without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from driver.dynamic.client import DynamicClient, Tls


@pytest.fixture()
def dynamic_client(shakedown_env: Any) -> Iterator[Callable[..., DynamicClient]]:
    from driver import agentname
    from driver.dynamic.signing import agent_signer

    made: list[DynamicClient] = []
    inventory = shakedown_env.inventory()

    def make(target: str, *, sign: bool | None = None, plaintext: bool = False,
             server_name: str | None = None, timeout: float = 10.0) -> DynamicClient:
        is_node = target in inventory.names
        node = inventory.node(target) if is_node else inventory.nodes[0]
        address = node.address if is_node else target
        tls = None if plaintext else Tls.from_files(node.ca_path, node.cert_path, node.key_path,
                                                    server_name or node.server_name)
        signed = is_node if sign is None else sign
        # A node signs for its own name; another target for the CN of its certificate.
        def peer() -> str:
            if tls is None or tls.cert is None or tls.key is None:
                raise ValueError(f"{target}: signing needs TLS to learn the agent's name")
            return agentname.peer_name(address, ca=tls.ca, cert=tls.cert, key=tls.key,
                                       server_name=tls.server_name)

        audience: Any = node.name if is_node else agentname.Audience(None, peer)
        signer = agent_signer(node.keys, node.principal, audience=audience) if signed else None
        client = DynamicClient(address, tls, signer, timeout=timeout)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()
