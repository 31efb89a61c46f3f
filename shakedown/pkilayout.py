"""File names in a PKI directory, shared by `certs init` (writer) and agent/driver (readers).

Keeping the naming here lets `shakedown-agent --certs DIR` and
`shakedown agent ... --certs DIR` find everything from the directory alone.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ROLES = ("admin", "observer")
PRINCIPALS_VERSION = 1


class PkiLayoutError(ValueError):
    pass


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.match(name):
        raise PkiLayoutError(f"{kind} name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


@dataclass(frozen=True, slots=True)
class PkiDir:
    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def principals(self) -> Path:
        return self.root / "principals.json"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    def agent_cert(self, name: str) -> Path:
        return self.root / f"agent-{check_name('agent', name)}.crt"

    def agent_key(self, name: str) -> Path:
        return self.root / f"agent-{check_name('agent', name)}.key"

    def client_cert(self, principal: str) -> Path:
        return self.root / f"client-{check_name('principal', principal)}.crt"

    def client_key(self, principal: str) -> Path:
        return self.root / f"client-{check_name('principal', principal)}.key"


def load_principals(path: str | os.PathLike[str]) -> dict[str, str]:
    """The allow-list: principal -> role."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PkiLayoutError(f"cannot read principals file {p}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise PkiLayoutError(f"{p}: not valid JSON: {exc}") from None
    principals = doc.get("principals") if isinstance(doc, dict) else None
    if not isinstance(principals, dict):
        raise PkiLayoutError(f'{p}: expected {{"version": 1, "principals": {{name: role}}}}')
    for name, role in principals.items():
        check_name("principal", name)
        if role not in ROLES:
            raise PkiLayoutError(f"{p}: principal {name!r}: unknown role {role!r} (use {ROLES})")
    return dict(principals)


def save_principals(path: str | os.PathLike[str], principals: dict[str, str]) -> None:
    for name, role in principals.items():
        check_name("principal", name)
        if role not in ROLES:
            raise PkiLayoutError(f"principal {name!r}: unknown role {role!r} (use {ROLES})")
    Path(path).write_text(
        json.dumps({"version": PRINCIPALS_VERSION, "principals": principals}, indent=2) + "\n",
        encoding="utf-8",
    )
