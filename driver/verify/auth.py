"""`verify auth`: does an endpoint really reject what it should?

Each case changes exactly one thing against a known-good call (a foreign CA,
an expired certificate, a tampered body, a replayed nonce...) and records what
the endpoint did. Probes are read-only calls (GetNodeInfo, a health check, or
KillContainer of a name that cannot exist), so running the matrix has no side
effect whether a case is rejected or, wrongly, accepted.

Works against any gRPC endpoint that should require mTLS; the HMAC cases run
when a keyring is given (a Shakedown agent, or anything speaking scheme v1).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from driver import agentname
from shakedown import keyring as keyring_mod
from shakedown import signing
from shakedown.pkilayout import PkiDir, load_principals

AGENT_PROBE = "/shakedown.agent.v1.Agent/GetNodeInfo"
HEALTH_PROBE = "/grpc.health.v1.Health/Check"
MUTATING_PROBE = "/shakedown.agent.v1.Agent/KillContainer"
OTHER_METHOD = "/shakedown.agent.v1.Agent/ListSessions"
# KillContainerRequest{container: "shakedown-verify-absent"}: NOT_FOUND if ever admitted.
MUTATING_BODY = b"\x0a\x17shakedown-verify-absent"
REJECTED = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAVAILABLE,
)


@dataclass(frozen=True, slots=True)
class Outcome:
    code: str
    details: str

    @property
    def accepted(self) -> bool:
        return self.code not in {c.name for c in REJECTED}

    def __str__(self) -> str:
        if self.code == "OK":
            return "accepted (OK)"
        verb = "accepted" if self.accepted else "rejected"
        return f"{verb} ({self.code}: {_short(self.details)})"


@dataclass(slots=True)
class Case:
    name: str
    category: str  # control | mtls | hmac
    expected: str  # accept | reject
    observed: str = ""
    verdict: str = ""  # pass | FAIL | skip
    code: str = ""


@dataclass(slots=True)
class AuthReport:
    target: str
    cases: list[Case] = field(default_factory=list)

    @property
    def failures(self) -> list[Case]:
        return [c for c in self.cases if c.verdict == "FAIL"]

    @property
    def accepted_negatives(self) -> list[Case]:
        return [c for c in self.failures if c.expected == "reject"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "ok": self.ok,
            "cases": [asdict(c) for c in self.cases],
            "summary": {
                v: sum(c.verdict == v for c in self.cases) for v in ("pass", "FAIL", "skip")
            },
        }


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Identity:
    key_pem: bytes | None
    cert_pem: bytes | None


class _Prober:
    def __init__(self, target: str, ca_pem: bytes, server_name: str | None, timeout: float) -> None:
        self.target, self.ca_pem, self.timeout = target, ca_pem, timeout
        self.options = [("grpc.ssl_target_name_override", server_name)] if server_name else []

    def call(
        self,
        identity: Identity | None,
        method: str,
        body: bytes,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Outcome:
        if identity is None:
            channel = grpc.insecure_channel(self.target)
        else:
            creds = grpc.ssl_channel_credentials(self.ca_pem, identity.key_pem, identity.cert_pem)
            channel = grpc.secure_channel(self.target, creds, options=self.options)
        try:
            stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            stub(body, timeout=self.timeout, metadata=list(metadata))
            return Outcome("OK", "")
        except grpc.RpcError as err:
            return Outcome(err.code().name, err.details() or "")
        finally:
            channel.close()


def _revoked_client(pki: PkiDir, crl_path: Path | None) -> tuple[Identity, str] | None:
    """A client cert from DIR whose serial the CRL lists, with its key."""
    path = crl_path or pki.crl
    if not path.exists():
        return None
    from cryptography import x509

    from driver.crl import cert_is_revoked, load_crl

    crl = load_crl(path)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    for cert_path in sorted(pki.root.glob("client-*.crt")):
        key = cert_path.with_suffix(".key")
        pem = cert_path.read_bytes()
        if key.exists() and cert_is_revoked(crl, ca, x509.load_pem_x509_certificate(pem)):
            return Identity(key.read_bytes(), pem), cert_path.stem.removeprefix("client-")
    return None


def verify_auth(
    target: str,
    certs: str | Path,
    keys: str | Path | None = None,
    *,
    principal: str = "driver",
    server_name: str | None = None,
    crl: str | Path | None = None,
    timeout: float = 5.0,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    agent_name: str | None = None,
) -> AuthReport:
    """Run the authentication matrix against ``target``; returns every case's verdict."""
    pki = PkiDir(Path(certs))
    ca_pem = (ca or pki.ca_cert).read_bytes()
    good = Identity(
        (key or pki.client_key(principal)).read_bytes(),
        (cert or pki.client_cert(principal)).read_bytes(),
    )
    ring = keyring_mod.load(keys) if keys else None
    signing_key = ring.signing_key(principal) if ring else None
    probe = AGENT_PROBE if ring else HEALTH_PROBE
    prober = _Prober(target, ca_pem, server_name, timeout)
    # HMAC v2 names the agent: given, else its certificate's CN (one handshake, when first needed).
    audience = agentname.Audience(agentname.choose(agent_name, None), lambda: agentname.peer_name(
        target, ca=ca_pem, cert=good.cert_pem or b"", key=good.key_pem or b"",
        server_name=server_name, timeout=timeout))
    report = AuthReport(target)

    def signed(
        method: str = probe,
        body: bytes = b"",
        *,
        key_id: str | None = None,
        secret: bytes | None = None,
        ts: int | None = None,
        sign_method: str | None = None,
        sign_body: bytes | None = None,
    ) -> list[tuple[str, str]]:
        if signing_key is None:
            return []
        headers = signing.sign(
            key_id or signing_key.id,
            secret or signing_key.secret,
            sign_method or method,
            body if sign_body is None else sign_body,
            audience=audience(),
            timestamp=ts,
        )
        return list(headers.metadata())

    def run(
        name: str, category: str, expected: str, fn: Callable[[], Outcome | str]
    ) -> Outcome | None:
        case = Case(name, category, expected)
        report.cases.append(case)
        try:
            result = fn()
        except Exception as exc:  # a broken probe is a finding, not a crash
            result = Outcome("ERROR", f"{type(exc).__name__}: {exc}")
        if isinstance(result, str):
            case.observed, case.verdict = f"skipped: {result}", "skip"
            return None
        case.observed, case.code = str(result), result.code
        if result.code == "ERROR":
            case.verdict = "FAIL"
        else:
            case.verdict = "pass" if result.accepted == (expected == "accept") else "FAIL"
        return result

    ca_key = pki.ca_key.read_bytes() if pki.ca_key.exists() else None
    from driver.pki import make_ca, make_leaf

    # -- control: a fully valid call must work, or the rest means nothing.
    run(
        "valid certificate" + (" and signature" if ring else ""),
        "control",
        "accept",
        lambda: prober.call(good, probe, b"", signed()),
    )

    # -- mTLS
    run("plaintext (no TLS)", "mtls", "reject", lambda: prober.call(None, probe, b"", signed()))
    run(
        "no client certificate",
        "mtls",
        "reject",
        lambda: prober.call(Identity(None, None), probe, b"", signed()),
    )

    def foreign_ca() -> Outcome:
        fkey, fcert = make_ca("shakedown-verify foreign CA")
        return prober.call(Identity(*make_leaf(fkey, fcert, principal)), probe, b"", signed())

    run("certificate from another CA", "mtls", "reject", foreign_ca)

    def minted(
        cn: str, not_before: dt.datetime | None = None, not_after: dt.datetime | None = None
    ) -> Outcome | str:
        if ca_key is None:
            return f"needs the CA key ({pki.ca_key}) to mint a test certificate"
        leaf = make_leaf(ca_key, ca_pem, cn, not_before=not_before, not_after=not_after)
        return prober.call(Identity(*leaf), probe, b"", signed())

    now = dt.datetime.now(dt.UTC)
    run(
        "expired certificate",
        "mtls",
        "reject",
        lambda: minted(
            principal, not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1)
        ),
    )

    def revoked() -> Outcome | str:
        found = _revoked_client(pki, Path(crl) if crl else None)
        if found is None:
            return f"no revoked client certificate in {pki.root} (run `shakedown certs revoke`)"
        return prober.call(found[0], probe, b"", signed())

    run("revoked certificate", "mtls", "reject", revoked)
    run(
        "principal not on the allow-list",
        "mtls",
        "reject",
        lambda: minted(f"shakedown-verify-intruder-{secrets.token_hex(3)}"),
    )

    def wrong_role() -> Outcome | str:
        if ring is None:
            return "needs --keys (a mutating Shakedown call)"
        roles = load_principals(pki.principals) if pki.principals.exists() else {}
        observers = [p for p, r in roles.items() if r == "observer" and pki.client_cert(p).exists()]
        if not observers:
            return "no observer principal with a certificate in the PKI directory"
        who = observers[0]
        ident = Identity(pki.client_key(who).read_bytes(), pki.client_cert(who).read_bytes())
        own: keyring_mod.Key | None = signing_key
        # Without a key of its own, sign with ours: the role check comes first anyway.
        with contextlib.suppress(keyring_mod.KeyringError):
            own = ring.signing_key(who)
        assert own is not None
        md = signing.sign(own.id, own.secret, MUTATING_PROBE, MUTATING_BODY,
                          audience=audience()).metadata()
        return prober.call(ident, MUTATING_PROBE, MUTATING_BODY, list(md))

    run("role may not mutate (observer kills a container)", "mtls", "reject", wrong_role)

    if ring is None or signing_key is None:
        return report

    # -- HMAC
    run("unsigned call", "hmac", "reject", lambda: prober.call(good, probe, b"", []))
    run(
        "wrong secret for the key id",
        "hmac",
        "reject",
        lambda: prober.call(good, probe, b"", signed(secret=secrets.token_bytes(32))),
    )
    run(
        "unknown key id",
        "hmac",
        "reject",
        lambda: prober.call(
            good,
            probe,
            b"",
            signed(key_id=f"verify-unknown-{secrets.token_hex(3)}", secret=secrets.token_bytes(32)),
        ),
    )

    def other_principals_key() -> Outcome | str:
        others = [k for k in ring.keys if k.active and k.principal != principal]
        if not others:
            return "the keyring holds no key of another principal"
        return prober.call(good, probe, b"", signed(key_id=others[0].id, secret=others[0].secret))

    run("key bound to another principal", "hmac", "reject", other_principals_key)
    run(
        "tampered body",
        "hmac",
        "reject",
        lambda: prober.call(good, probe, b"\x78\x01", signed(sign_body=b"")),
    )
    run(
        "signature for another method",
        "hmac",
        "reject",
        lambda: prober.call(good, probe, b"", signed(sign_method=OTHER_METHOD)),
    )
    run(
        "stale timestamp (-10 min)",
        "hmac",
        "reject",
        lambda: prober.call(good, probe, b"", signed(ts=int(time.time()) - 600)),
    )
    run(
        "future timestamp (+10 min)",
        "hmac",
        "reject",
        lambda: prober.call(good, probe, b"", signed(ts=int(time.time()) + 600)),
    )

    def replay() -> Outcome | str:
        md = signed()
        first = prober.call(good, probe, b"", md)
        if not first.accepted:
            return f"the first, valid call was already rejected ({first})"
        return prober.call(good, probe, b"", md)

    run("replayed nonce", "hmac", "reject", replay)
    return report


def render_table(report: AuthReport) -> str:
    rows = [("CASE", "EXPECTED", "OBSERVED", "VERDICT")]
    rows += [(c.name, c.expected, c.observed, c.verdict) for c in report.cases]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    n = len(report.accepted_negatives)
    summary = (
        f"{report.target}: all {len(report.cases)} cases as expected"
        if report.ok
        else f"{report.target}: {len(report.failures)} case(s) FAILED"
        + (f", {n} should-be-rejected case(s) ACCEPTED" if n else "")
    )
    skipped = sum(c.verdict == "skip" for c in report.cases)
    if skipped:
        summary += f" ({skipped} skipped)"
    return "\n".join([*lines, "", summary])
