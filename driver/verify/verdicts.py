"""What one `verify auth` observation proves: accepted, rejected, or nothing.

A verdict is a promise. "rejected" only when the refusal demonstrably came
from authentication or authorization (a TLS refusal by the server,
UNAUTHENTICATED, PERMISSION_DENIED); "accepted" only when the call reached the
method (OK, or an error only a handler gives). Everything else, UNIMPLEMENTED
above all (grpc-go and grpcio answer it for an unknown method before any
interceptor runs), is "inconclusive": it never counts as accepted or rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

from driver.verify.tlsprobe import Handshake

# Results: what happened to one call.
ACCEPTED = "accepted"
REJECTED = "rejected"
INCONCLUSIVE = "inconclusive"
NOT_APPLICABLE = "not applicable"
SKIPPED = "skipped"

# Verdicts: the result against the case's expectation.
PASS = "pass"
FAIL = "FAIL"
VERDICT_INCONCLUSIVE = "inconclusive"
VERDICT_NOT_APPLICABLE = "not applicable"
SKIP = "skip"
VERDICTS = (PASS, FAIL, VERDICT_INCONCLUSIVE, VERDICT_NOT_APPLICABLE, SKIP)

AUTH_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
# Codes a method handler gives about its request: the call got past authorization.
HANDLER_CODES = frozenset(
    {"INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "OUT_OF_RANGE"}
)


@dataclass(frozen=True, slots=True)
class Observation:
    result: str  # accepted | rejected | inconclusive | not applicable | skipped
    # A gRPC status name; "TLS" for a handshake outcome; "" when nothing was sent.
    code: str
    reason: str

    def annotated(self, note: str, result: str | None = None) -> Observation:
        return Observation(result or self.result, self.code, f"{self.reason}; {note}")


def from_handshake(h: Handshake, *, plaintext: bool = False) -> Observation | None:
    """The observation a handshake settles on its own; None when it got through."""
    if h.outcome == "accepted":
        return None
    if h.outcome == "refused":
        return Observation(REJECTED, "TLS", h.reason)
    if h.outcome == "untrusted":
        # Our refusal of the server: it says nothing about the server's checks.
        return Observation(INCONCLUSIVE, "TLS", f"{h.reason} (check --server-name / the CA)")
    what = "plaintext" if plaintext else "TLS"
    return Observation(INCONCLUSIVE, "UNREACHABLE", f"{what} connection failed: {h.reason}")


def from_status(code: str, details: str) -> Observation:
    """The observation a gRPC status gives, after a handshake that got through."""
    details = _short(details)
    if code == "OK":
        return Observation(ACCEPTED, code, "OK (the call reached the method)")
    if code in AUTH_CODES:
        return Observation(REJECTED, code, f"{code}: {details}")
    if code in HANDLER_CODES:
        return Observation(
            ACCEPTED, code, f"{code} from the method (past authorization): {details}"
        )
    if code == "UNIMPLEMENTED":
        return Observation(
            INCONCLUSIVE,
            code,
            f"UNIMPLEMENTED: {details} (often answered before any authorization runs; probe a "
            "served method: --method)",
        )
    if code == "UNAVAILABLE":
        return Observation(INCONCLUSIVE, code, f"UNAVAILABLE after a good TLS handshake: {details}")
    return Observation(INCONCLUSIVE, code, f"{code}: {details} (not an authorization error)")


def verdict(expected: str, obs: Observation) -> str:
    if obs.result == NOT_APPLICABLE:
        return VERDICT_NOT_APPLICABLE
    if obs.result == SKIPPED:
        return SKIP
    if obs.result == INCONCLUSIVE:
        return VERDICT_INCONCLUSIVE
    wanted = ACCEPTED if expected == "accept" else REJECTED
    return PASS if obs.result == wanted else FAIL


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
