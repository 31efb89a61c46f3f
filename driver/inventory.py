"""The node inventory: a small TOML file naming each agent and how to reach it.

```toml
[defaults]              # optional; relative paths are relative to this file
certs = "certs"         # a `shakedown certs init` directory
keys = "certs/keys.json"
principal = "driver"

[[nodes]]
name = "n1"
address = "127.0.0.1:7701"
# optional per node: certs, keys, principal, server_name, ca, cert, key, agent_name
```

``agent_name`` is the agent's ``--name`` when it differs from the node name:
the audience of the node's HMAC signatures.

``ca``/``cert``/``key`` override the files a ``certs`` directory implies.
Every error names the file and the field, e.g. ``inventory.toml: nodes[1].address: ...``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shakedown.pkilayout import NAME_RE, PkiDir

if TYPE_CHECKING:
    from driver.client import AgentClient

PATH_FIELDS = ("certs", "keys", "ca", "cert", "key")
STRING_FIELDS = ("principal", "server_name")
NODE_FIELDS = ("name", "address", *PATH_FIELDS, *STRING_FIELDS, "agent_name")
DEFAULT_FIELDS = (*PATH_FIELDS, *STRING_FIELDS)
_ADDRESS_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


class InventoryError(ValueError):
    """The inventory is unreadable or invalid; the message names file and field."""


def check_address(address: str) -> str | None:
    """None when ``address`` is HOST:PORT (``[v6]:PORT`` too), else the reason."""
    m = _ADDRESS_RE.match(address)
    if not m:
        return f"expected HOST:PORT, got {address!r}"
    if not 0 < int(m.group(2)) < 65536:
        return f"port {m.group(2)} is out of range"
    return None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    address: str
    keys: Path
    certs: Path | None = None
    principal: str = "driver"
    server_name: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    # The agent's --name, when it is not the node name (the signatures' audience).
    agent_name: str | None = None

    def _pki(self, what: str) -> PkiDir:
        if self.certs is None:
            raise InventoryError(f"node {self.name}: no {what} and no certs directory")
        return PkiDir(self.certs)

    @property
    def ca_path(self) -> Path:
        return self.ca or self._pki("ca").ca_cert

    @property
    def cert_path(self) -> Path:
        return self.cert or self._pki("cert").client_cert(self.principal)

    @property
    def key_path(self) -> Path:
        return self.key or self._pki("key").client_key(self.principal)

    def client(self, **kwargs: Any) -> AgentClient:
        from driver.client import AgentClient

        return AgentClient.from_node(self, **kwargs)


@dataclass(frozen=True, slots=True)
class Inventory:
    path: Path
    nodes: list[NodeConfig]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def node(self, name: str) -> NodeConfig:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(self.names) or "none"
        raise InventoryError(f"{self.path.name}: no node named {name!r} (known: {known})")

    def clients(self, names: Sequence[str] | None = None,
                **kwargs: Any) -> dict[str, AgentClient]:
        """One client per node (or per name in ``names``), keyed by node name."""
        chosen = [self.node(n) for n in names] if names is not None else self.nodes
        return {n.name: n.client(**kwargs) for n in chosen}


def _parse_table(table: Any, where: str, base: Path, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise InventoryError(f"{where}: expected a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in allowed:
            raise InventoryError(f"{where}.{key}: unknown field (expected one of "
                                 f"{', '.join(allowed)})")
        if not isinstance(value, str) or not value:
            raise InventoryError(f"{where}.{key}: expected a non-empty string")
        out[key] = (base / value).resolve() if key in PATH_FIELDS else value
    return out


def parse_inventory(text: str, path: Path) -> Inventory:
    src = path.name
    base = path.parent
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{src}: invalid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"defaults", "nodes"})
    if unknown:
        raise InventoryError(f"{src}: {unknown[0]}: unknown section (expected defaults, nodes)")
    defaults = _parse_table(doc.get("defaults", {}), f"{src}: defaults", base, DEFAULT_FIELDS)
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise InventoryError(f"{src}: nodes: expected at least one [[nodes]] table")
    nodes: list[NodeConfig] = []
    for i, raw in enumerate(raw_nodes):
        where = f"{src}: nodes[{i}]"
        fields = {**defaults, **_parse_table(raw, where, base, NODE_FIELDS)}
        for required in ("name", "address"):
            if required not in fields:
                raise InventoryError(f"{where}.{required}: missing")
        if not NAME_RE.match(fields["name"]):
            raise InventoryError(f"{where}.name: {fields['name']!r}: use letters, digits, "
                                 "'.', '_' or '-'")
        if "agent_name" in fields and not NAME_RE.match(fields["agent_name"]):
            raise InventoryError(f"{where}.agent_name: {fields['agent_name']!r}: use letters, "
                                 "digits, '.', '_' or '-'")
        if fields["name"] in (n.name for n in nodes):
            raise InventoryError(f"{where}.name: duplicate node name {fields['name']!r}")
        if reason := check_address(fields["address"]):
            raise InventoryError(f"{where}.address: {reason}")
        if "keys" not in fields:
            raise InventoryError(f"{where}.keys: missing (set it on the node or in [defaults])")
        if "certs" not in fields and not all(k in fields for k in ("ca", "cert", "key")):
            raise InventoryError(f"{where}.certs: missing (set certs, or all of ca, cert, key)")
        nodes.append(NodeConfig(**fields))
    return Inventory(path, nodes, defaults)


def load_inventory(path: str | Path) -> Inventory:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {p}: {exc.strerror}") from None
    return parse_inventory(text, p.resolve())


# ---------------------------------------------------------------- writing

def _toml_str(value: str) -> str:
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _rel(value: Path, base: Path) -> str:
    """Relative to the inventory's directory when below it, so the tree can move."""
    try:
        return value.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(value.resolve())


def write_inventory(path: str | Path, nodes: Sequence[NodeConfig],
                    defaults: Mapping[str, str | Path] | None = None) -> Path:
    """Write ``nodes`` as TOML; per-node fields equal to the defaults are left out."""
    p = Path(path)
    base = p.parent.resolve()
    defaults = dict(defaults or {})
    for key in defaults:
        if key not in DEFAULT_FIELDS:
            raise InventoryError(f"defaults.{key}: unknown field")
    resolved = {k: (base / v).resolve() if k in PATH_FIELDS else v for k, v in defaults.items()}
    lines: list[str] = []
    if defaults:
        lines.append("[defaults]")
        for key, value in defaults.items():
            text = _rel(base / value, base) if key in PATH_FIELDS else str(value)
            lines.append(f"{key} = {_toml_str(text)}")
        lines.append("")
    for node in nodes:
        lines += ["[[nodes]]", f"name = {_toml_str(node.name)}",
                  f"address = {_toml_str(node.address)}"]
        for key in (*PATH_FIELDS, *STRING_FIELDS, "agent_name"):
            value = getattr(node, key)
            if value is None or value == resolved.get(key):
                continue
            if key == "principal" and value == "driver" and "principal" not in resolved:
                continue  # the default
            text = _rel(value, base) if key in PATH_FIELDS else str(value)
            lines.append(f"{key} = {_toml_str(text)}")
        lines.append("")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines), encoding="utf-8")
    return p
