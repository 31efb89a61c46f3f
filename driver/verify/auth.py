"""`verify auth`: does an endpoint really reject what it should?

Each case changes exactly one thing against a known-good call (a foreign CA,
an expired certificate, a tampered body, a replayed nonce...) and records what
the endpoint did, judged by driver.verify.verdicts. The probe is a method the
server really serves (driver.verify.probemethod), called with an empty or
given request, so running the matrix has no side effect whether a case is
rejected or, wrongly, accepted.

Every call goes through driver.verify.prober: TLS refusals are reported with
the server's alert, and gRPC never attempts a handshake that fails.

Works against any gRPC endpoint that should require mTLS. The role and HMAC
cases need a Shakedown agent (and a keyring): elsewhere they are "not
applicable".
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from driver import agentname
from driver.verify.authreport import AuthReport, Case
from driver.verify.probemethod import AGENT_SERVICE, ProbeMethod, choose, normalize
from driver.verify.prober import Identity, Key, Prober
from driver.verify.verdicts import (
    ACCEPTED,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    REJECTED,
    SKIPPED,
    Observation,
    from_handshake,
)
from shakedown import keyring as keyring_mod
from shakedown import signing
from shakedown.pkilayout import PkiDir, load_principals

MUTATING_PROBE = f"/{AGENT_SERVICE}/KillContainer"
OTHER_METHOD = f"/{AGENT_SERVICE}/ListSessions"
OTHER_AGENT = "shakedown-verify-other-agent"
# KillContainerRequest{container: "shakedown-verify-absent"}: NOT_FOUND if ever admitted.
MUTATING_BODY = b"\x0a\x17shakedown-verify-absent"


def _agent_name(cn: str) -> str | None:
    try:
        return signing.check_audience(cn) if cn else None
    except signing.SignatureFormatError:
        return None


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
    method: str | None = None,
    data: Mapping[str, Any] | None = None,
    agent_name: str | None = None,
) -> AuthReport:
    """Run the authentication matrix against ``target``; returns every case's verdict.

    ``method``/``data`` name the probe (``/pkg.Svc/Method``, its request as a
    JSON-like dict); by default one is found (see driver.verify.probemethod).
    ``agent_name`` is the audience HMAC v2 signatures name (default: the
    CN of the server's certificate). Raises ValueError for a bad argument.
    """
    if method is not None:
        method = normalize(method)
    if data is not None and method is None:
        raise ValueError("--data: needs --method (the method whose request it is)")
    pki = PkiDir(Path(certs))
    ca_pem = (ca or pki.ca_cert).read_bytes()
    good = Identity(
        (key or pki.client_key(principal)).read_bytes(),
        (cert or pki.client_cert(principal)).read_bytes(),
    )
    ring = keyring_mod.load(keys) if keys else None
    own_key = ring.signing_key(principal) if ring else None
    prober = Prober(target, ca_pem, server_name, timeout)
    report = AuthReport(target)
    ca_key = pki.ca_key.read_bytes() if pki.ca_key.exists() else None
    from driver.pki import make_ca, make_leaf

    control_hs = prober.handshake(good)
    # HMAC v2 names the agent: given, else its certificate's CN (shakedown certs init puts it
    # there), learnt by the control handshake. None (no valid name): a v1 signature.
    audience = agentname.choose(agent_name, None) or _agent_name(control_hs.server_cn)

    def sign(
        k: Key | None, method_: str, body: bytes, ts: int | None = None, *, to: str | None = None
    ) -> list[tuple[str, str]]:
        if k is None:
            return []
        aud = to or audience
        headers = signing.sign(k.id, k.secret, method_, body, audience=aud, timestamp=ts)
        return list(headers.metadata())

    def key_of(who: str) -> Key | None:
        """who's own active key; else ours (what is refused first is then the cert)."""
        if ring is None:
            return None
        try:
            k: keyring_mod.Key | None = ring.signing_key(who)
        except keyring_mod.KeyringError:
            k = own_key
        return None if k is None else Key(k.id, k.secret)

    mine = key_of(principal)

    if from_handshake(control_hs) is not None:
        probe: ProbeMethod | None = None
    else:
        with prober.channel(good) as channel:
            probe = choose(
                channel,
                lambda m, b: prober.call(good, m, b, sign(mine, m, b)),
                method=method,
                data=data,
                signed=ring is not None,
                timeout=timeout,
            )
    report.probe = probe
    pm, pbody = (probe.method, probe.body) if probe else ("", b"")

    def as_who(who: str, ident: Identity, body: bytes | None = None) -> Observation:
        b = pbody if body is None else body
        return prober.call(ident, pm, b, sign(key_of(who), pm, b))

    def run(name: str, category: str, expected: str, fn: Callable[[], Observation | str]) -> None:
        case = Case(name, category, expected)
        report.cases.append(case)
        obs: Observation | str
        try:
            obs = fn()
        except Exception as exc:  # a broken probe is a finding, not a crash
            obs = Observation(INCONCLUSIVE, "ERROR", f"{type(exc).__name__}: {exc}")
        if isinstance(obs, str):
            obs = Observation(SKIPPED, "", obs)
        case.record(obs, MUTATING_PROBE if category == "role" else pm)

    # -- control: a fully valid call must work, or the rest means nothing.
    run(
        "valid certificate" + (" and signature" if ring and probe and probe.agent else ""),
        "control",
        "accept",
        lambda: from_handshake(control_hs) or as_who(principal, good),
    )

    # -- mTLS
    run(
        "plaintext (no TLS)",
        "mtls",
        "reject",
        lambda: prober.call(None, pm, pbody, sign(mine, pm, pbody)),
    )
    run(
        "no client certificate",
        "mtls",
        "reject",
        lambda: prober.call(Identity(None, None), pm, pbody, sign(mine, pm, pbody)),
    )

    def foreign_ca() -> Observation:
        fkey, fcert = make_ca("shakedown-verify foreign CA")
        return as_who(principal, Identity(*make_leaf(fkey, fcert, principal)))

    run("certificate from another CA", "mtls", "reject", foreign_ca)

    def minted(cn: str, **validity: dt.datetime) -> Identity | str:
        if ca_key is None:
            return f"needs the CA key ({pki.ca_key}) to mint a test certificate"
        return Identity(*make_leaf(ca_key, ca_pem, cn, **validity))  # type: ignore[arg-type]

    def minted_call(cn: str, **validity: dt.datetime) -> Observation | str:
        ident = minted(cn, **validity)
        return ident if isinstance(ident, str) else as_who(cn, ident)

    now = dt.datetime.now(dt.UTC)
    run(
        "expired certificate",
        "mtls",
        "reject",
        lambda: minted_call(
            principal, not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1)
        ),
    )

    def revoked() -> Observation | str:
        found = _revoked_client(pki, Path(crl) if crl else None)
        if found is None:
            return f"no revoked client certificate in {pki.root} (run `shakedown certs revoke`)"
        ident, who = found
        obs = as_who(who, ident)
        if obs.result != REJECTED:
            return obs
        # Was it the revocation? A fresh certificate for the same principal tells.
        twin = minted(who)
        if isinstance(twin, str):
            return obs.annotated(f"unproven that revocation refused it ({twin})")
        fresh = as_who(who, twin)
        if fresh.result == REJECTED and fresh.code == obs.code:
            return obs.annotated(
                f"a fresh certificate for {who!r} is refused the same way, so revocation is "
                "not shown",
                INCONCLUSIVE,
            )
        return obs.annotated(
            f"a fresh certificate for {who!r} gets {fresh.code or fresh.result} instead"
        )

    run("revoked certificate", "mtls", "reject", revoked)
    run(
        "principal not on the allow-list",
        "mtls",
        "reject",
        lambda: minted_call(f"shakedown-verify-intruder-{secrets.token_hex(3)}"),
    )

    agent = probe is not None and probe.agent
    na = Observation(NOT_APPLICABLE, "", f"{target} serves no {AGENT_SERVICE}")
    if probe is None:  # whether it is an agent is unknown
        na = Observation(SKIPPED, "", "not run: the valid identity got no further than TLS")
    if not agent and probe is not None:
        report.not_applicable_reason = f"no {AGENT_SERVICE} at {target} (role and HMAC checks)"

    def wrong_role() -> Observation | str:
        if not agent:
            return na
        if ring is None:
            return "needs --keys (a mutating Shakedown call)"
        roles = load_principals(pki.principals) if pki.principals.exists() else {}
        observers = [p for p, r in roles.items() if r == "observer" and pki.client_cert(p).exists()]
        if not observers:
            return "no observer principal with a certificate in the PKI directory"
        who = observers[0]
        ident = Identity(pki.client_key(who).read_bytes(), pki.client_cert(who).read_bytes())
        return prober.call(
            ident, MUTATING_PROBE, MUTATING_BODY, sign(key_of(who), MUTATING_PROBE, MUTATING_BODY)
        )

    run("observer kills a container", "role", "reject", wrong_role)

    if ring is None or mine is None:
        return report
    _hmac_cases(run, prober, good, pm, pbody, mine, ring, principal, sign, None if agent else na)
    return report


def _hmac_cases(
    run: Callable[[str, str, str, Callable[[], Observation | str]], None],
    prober: Prober,
    good: Identity,
    pm: str,
    body: bytes,
    mine: Key,
    ring: keyring_mod.Keyring,
    principal: str,
    sign: Callable[..., list[tuple[str, str]]],
    na: Observation | None,
) -> None:
    def case(name: str, fn: Callable[[], Observation | str]) -> None:
        run(name, "hmac", "reject", (lambda: na) if na is not None else fn)

    def call(md: list[tuple[str, str]], sent: bytes = body) -> Observation:
        return prober.call(good, pm, sent, md)

    def fresh_secret() -> Key:
        return Key(mine.id, secrets.token_bytes(32))

    case("unsigned call", lambda: call([]))
    case("wrong secret for the key id", lambda: call(sign(fresh_secret(), pm, body)))
    case(
        "unknown key id",
        lambda: call(
            sign(Key(f"verify-unknown-{secrets.token_hex(3)}", secrets.token_bytes(32)), pm, body)
        ),
    )

    def other_principals_key() -> Observation | str:
        others = [k for k in ring.keys if k.active and k.principal != principal]
        if not others:
            return "the keyring holds no key of another principal"
        return call(sign(Key(others[0].id, others[0].secret), pm, body))

    case("key bound to another principal", other_principals_key)
    # Field 15 (varint 1): ignored by the method if ever admitted, so no side effect.
    case("tampered body", lambda: call(sign(mine, pm, body), body + b"\x78\x01"))
    case("signature for another method", lambda: call(sign(mine, OTHER_METHOD, body)))
    # HMAC v2: a signature names its agent; one for a sibling must not be accepted here.
    case("signature for another agent", lambda: call(sign(mine, pm, body, to=OTHER_AGENT)))
    case("stale timestamp (-10 min)", lambda: call(sign(mine, pm, body, int(time.time()) - 600)))
    case("future timestamp (+10 min)", lambda: call(sign(mine, pm, body, int(time.time()) + 600)))

    def replay() -> Observation | str:
        md = sign(mine, pm, body)
        first = call(md)
        if first.result != ACCEPTED:
            return f"the first, valid call was not accepted ({first.reason})"
        return call(md)

    case("replayed nonce", replay)
