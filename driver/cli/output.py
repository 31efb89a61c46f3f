"""How the CLI prints things: one JSON serializer, tables, sizes, log lines.

Every command that prints a container (``run``, ``ps``, ``inspect``, ``stop`` ...)
goes through `container_doc`, so the same container reads the same everywhere.
Nothing here imports grpc or the stubs: `shakedown --help` must stay fast.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def jsonable(value: Any) -> Any:
    import dataclasses  # (with `inspect`, ~8 ms: not for `--help`)

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def container_doc(c: Any, node: str = "") -> dict[str, Any]:
    """The one JSON shape of a container (a full `Container`, i.e. from inspect)."""
    doc: dict[str, Any] = jsonable(c)
    doc["node"] = c.node or node
    return doc


def dumps(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2, sort_keys=True)


def print_json(value: Any) -> None:
    print(dumps(value))


def log_record(stream: str, line: str) -> str:
    """One JSON line of `logs --json`: the engine's timestamp split off the line."""
    stamp, sep, data = line.partition(" ")
    if not sep or not stamp[:4].isdigit() or "T" not in stamp:
        stamp, data = "", line
    return json.dumps({"stream": stream, "data": data, "timestamp": stamp or None})


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:g} {unit}"
        n = round(n / 1024, 1)
    return f"{n:g} TiB"


def ports(c: Any) -> str:
    return ",".join(f"{p.host_ip or '127.0.0.1'}:{p.host_port}->{p.container_port}/{p.protocol}"
                    for p in c.ports if p.host_port)
