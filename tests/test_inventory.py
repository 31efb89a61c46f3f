"""Inventory parsing, path resolution, field-naming errors and the writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from driver.inventory import (
    InventoryError,
    NodeConfig,
    check_address,
    load_inventory,
    write_inventory,
)

BASIC = """
[defaults]
certs = "certs"
keys = "certs/keys.json"
principal = "driver"

[[nodes]]
name = "n1"
address = "127.0.0.1:7701"

[[nodes]]
name = "n2"
address = "[::1]:7702"
principal = "viewer"
server_name = "n2"
keys = "/abs/keys.json"
"""
DEFAULTS = '[defaults]\ncerts = "c"\nkeys = "k.json"\n'


def _write(tmp_path: Path, text: str, name: str = "inventory.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_parse_defaults_and_overrides(tmp_path: Path) -> None:
    inv = load_inventory(_write(tmp_path, BASIC))
    assert inv.names == ["n1", "n2"]
    n1, n2 = inv.nodes
    assert n1.certs == tmp_path / "certs"
    assert n1.keys == tmp_path / "certs" / "keys.json"
    assert n1.principal == "driver" and n1.server_name is None
    assert n1.ca_path == tmp_path / "certs" / "ca.crt"
    assert n1.cert_path == tmp_path / "certs" / "client-driver.crt"
    assert n1.key_path == tmp_path / "certs" / "client-driver.key"
    assert n2.address == "[::1]:7702"
    assert n2.principal == "viewer" and n2.server_name == "n2"
    assert n2.keys == Path("/abs/keys.json")
    assert n2.cert_path == tmp_path / "certs" / "client-viewer.crt"
    assert inv.node("n2") is n2


def test_paths_are_relative_to_the_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "env"
    sub.mkdir()
    path = _write(sub, BASIC)
    monkeypatch.chdir(tmp_path)
    inv = load_inventory(Path("env") / path.name)
    assert inv.nodes[0].certs == sub / "certs"


def test_explicit_files_override_certs_dir(tmp_path: Path) -> None:
    inv = load_inventory(_write(tmp_path, """
[[nodes]]
name = "n1"
address = "localhost:1"
keys = "k.json"
ca = "pki/root.pem"
cert = "pki/me.pem"
key = "pki/me.key"
"""))
    node = inv.nodes[0]
    assert node.certs is None
    assert (node.ca_path, node.cert_path, node.key_path) == (
        tmp_path / "pki/root.pem", tmp_path / "pki/me.pem", tmp_path / "pki/me.key")


def test_unknown_node_lists_known_names(tmp_path: Path) -> None:
    inv = load_inventory(_write(tmp_path, BASIC))
    with pytest.raises(InventoryError, match=r"no node named 'n9' \(known: n1, n2\)"):
        inv.node("n9")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (DEFAULTS + '[[nodes]]\nname = "a"\naddress = "h:1"\n'
         '[[nodes]]\nname = "b"\naddress = "nope"\n',
         r"inventory\.toml: nodes\[1\]\.address: expected HOST:PORT"),
        ('[[nodes]]\nname = "a"\naddress = "h:70000"\n', r"nodes\[0\]\.address: port 70000"),
        ('[[nodes]]\naddress = "h:1"\n', r"nodes\[0\]\.name: missing"),
        ('[[nodes]]\nname = "a b"\naddress = "h:1"\n', r"nodes\[0\]\.name: 'a b'"),
        (DEFAULTS + '[[nodes]]\nname = "a"\naddress = "h:1"\n'
         '[[nodes]]\nname = "a"\naddress = "h:2"\n',
         r"nodes\[1\]\.name: duplicate"),
        ('[[nodes]]\nname = "a"\naddress = "h:1"\nport = "1"\n', r"nodes\[0\]\.port: unknown"),
        ('[[nodes]]\nname = "a"\naddress = 7\n', r"nodes\[0\]\.address: expected a non-empty"),
        ('[defaults]\nkeys = "k"\n', r"inventory\.toml: nodes: expected at least one"),
        ('[defaults]\ncolour = "red"\n[[nodes]]\nname = "a"\naddress = "h:1"\n',
         r"defaults\.colour: unknown field"),
        ('[[nodes]]\nname = "a"\naddress = "h:1"\n', r"nodes\[0\]\.keys: missing"),
        ('[[nodes]]\nname = "a"\naddress = "h:1"\nkeys = "k"\n', r"nodes\[0\]\.certs: missing"),
        ('[[nodes]\n', r"inventory\.toml: invalid TOML"),
        ('[extra]\n', r"inventory\.toml: extra: unknown section"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(InventoryError, match=message):
        load_inventory(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read inventory"):
        load_inventory(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("address", "ok"),
    [("127.0.0.1:7701", True), ("node-1.example:1", True), ("[::1]:443", True),
     ("host", False), ("host:", False), (":80", False), ("host:0", False), ("a b:1", False)],
)
def test_check_address(address: str, ok: bool) -> None:
    assert (check_address(address) is None) is ok


def test_write_load_round_trip(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    nodes = [
        NodeConfig("n1", "127.0.0.1:7701", keys=certs / "keys.json", certs=certs),
        NodeConfig("n2", "127.0.0.1:7702", keys=certs / "keys.json", certs=certs,
                   principal="viewer", server_name='odd "name"'),
        NodeConfig("n3", "[::1]:7703", keys=Path("/elsewhere/keys.json"), certs=certs,
                   ca=Path("/elsewhere/ca.pem")),
    ]
    path = write_inventory(tmp_path / "inv.toml", nodes,
                           {"certs": "certs", "keys": "certs/keys.json"})
    text = path.read_text()
    assert 'certs = "certs"' in text  # relative, so the tree can move
    assert text.count("certs =") == 1  # per-node values equal to defaults are left out
    inv = load_inventory(path)
    assert inv.nodes == nodes


def test_write_without_defaults(tmp_path: Path) -> None:
    nodes = [NodeConfig("solo", "localhost:9", keys=tmp_path / "k.json", certs=tmp_path / "c")]
    inv = load_inventory(write_inventory(tmp_path / "sub" / "inv.toml", nodes))
    assert inv.nodes == nodes
