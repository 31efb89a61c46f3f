#!/usr/bin/env python3
"""Writes tests/vectors/hmac-v1.json and hmac-v2.json from an independent, spec-literal
implementation.

Deliberately does not import shakedown.signing: the vectors are a second
reading of docs/protocol.md, and every implementation (ours in Python, the Go
client) must reproduce them. Re-running it must yield the same file.
"""

import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path

KEYS = {
    "driver-k1": ("driver", bytes(range(32))),
    "driver-k2": ("driver", b"\x00" * 16),  # shortest allowed secret, all zero bytes
    "long.key_id-with.every-allowed_char.0123456789abcdefghijklmnopqr": (
        "ops",
        hashlib.sha256(b"shakedown").digest() * 4,
    ),  # 128 bytes: longer than the block
}
GET = "/shakedown.agent.v1.Agent/GetNodeInfo"
CREATE = "/shakedown.agent.v1.Agent/CreateContainer"


def canonical(key_id, method, ts, nonce, body):
    return "\n".join(
        [
            "SHAKEDOWN-HMAC-SHA256-V1",
            key_id,
            method,
            str(ts),
            nonce,
            hashlib.sha256(body).hexdigest(),
        ]
    ).encode()


def sig(key_id, method, ts, nonce, body):
    return hmac.new(
        KEYS[key_id][1], canonical(key_id, method, ts, nonce, body), hashlib.sha256
    ).hexdigest()


# CreateContainerRequest{session_id: "s-1", spec: {image: "busybox", env: {"GRÜSSE": "héllo ☃"}}}
# hand-encoded so the vector does not depend on any protobuf library's map order.
env_entry = b"\x0a\x07" + "GRÜSSE".encode() + b"\x12\x0a" + "héllo ☃".encode()
spec = b"\x12\x07busybox" + b"\x2a" + bytes([len(env_entry)]) + env_entry
CREATE_BODY = b"\x0a\x03s-1" + b"\x12" + bytes([len(spec)]) + spec

SIGN_CASES = [
    ("empty body", "driver-k1", GET, 1767225600, "AAAAAAAAAAAAAAAAAAAAAAAA", b""),
    (
        "create with unicode env",
        "driver-k1",
        CREATE,
        1767225600,
        "n0nce-with_dash-and_underscore",
        CREATE_BODY,
    ),
    ("every byte value", "driver-k2", CREATE, 1767225601, "0123456789abcdef", bytes(range(256))),
    ("timestamp zero", "driver-k1", GET, 0, "zzzzzzzzzzzzzzzz", b""),
    ("largest timestamp", "driver-k1", GET, 999999999999, "Z" * 64, b"\x00"),
    (
        "secret longer than a block",
        "long.key_id-with.every-allowed_char.0123456789abcdefghijklmnopqr",
        "/grpc.testing.Custom_Service.V2/Do_Thing",
        1767225600,
        "-_-_-_-_-_-_-_-_",
        b"\xff" * 1000,
    ),
]


def build():
    doc = {
        "scheme": "SHAKEDOWN-HMAC-SHA256-V1",
        "spec": "docs/protocol.md",
        "keys": {
            kid: {"principal": p, "secret_b64": base64.b64encode(s).decode()}
            for kid, (p, s) in KEYS.items()
        },
        "sign": [],
        "verify": [],
        "malformed": [],
    }
    for name, kid, method, ts, nonce, body in SIGN_CASES:
        doc["sign"].append(
            {
                "name": name,
                "key_id": kid,
                "method": method,
                "timestamp": ts,
                "nonce": nonce,
                "body_hex": body.hex(),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "canonical": canonical(kid, method, ts, nonce, body).decode(),
                "signature": sig(kid, method, ts, nonce, body),
            }
        )
    good = sig("driver-k1", CREATE, 1767225600, "AAAAAAAAAAAAAAAAAAAAAAAA", CREATE_BODY)

    def v(
        name,
        valid,
        body=CREATE_BODY,
        method=CREATE,
        key_id="driver-k1",
        ts=1767225600,
        nonce="AAAAAAAAAAAAAAAAAAAAAAAA",
        signature=good,
    ):
        doc["verify"].append(
            {
                "name": name,
                "valid": valid,
                "method": method,
                "body_hex": body.hex(),
                "metadata": {
                    "x-shakedown-key-id": key_id,
                    "x-shakedown-timestamp": str(ts),
                    "x-shakedown-nonce": nonce,
                    "x-shakedown-signature": signature,
                },
            }
        )

    v("valid", True)
    v("tampered body (one byte flipped)", False, body=CREATE_BODY[:-1] + b"\x00")
    v("appended unknown field", False, body=CREATE_BODY + b"\x78\x01")
    v("other method", False, method="/shakedown.agent.v1.Agent/RemoveContainer")
    v("other timestamp", False, ts=1767225601)
    v("other nonce", False, nonce="AAAAAAAAAAAAAAAAAAAAAAAB")
    v("signed with another key of the same principal", False, key_id="driver-k2")
    v("uppercase signature", False, signature=good.upper())
    v("truncated signature", False, signature=good[:-2])
    m = doc["malformed"]
    m.append({"name": "nonce too short", "field": "x-shakedown-nonce", "value": "abc"})
    m.append({"name": "nonce too long", "field": "x-shakedown-nonce", "value": "a" * 65})
    m.append(
        {"name": "nonce with a slash", "field": "x-shakedown-nonce", "value": "aaaaaaaaaaaaaaa/"}
    )
    m.append(
        {"name": "timestamp with leading zero", "field": "x-shakedown-timestamp", "value": "0123"}
    )
    m.append({"name": "timestamp negative", "field": "x-shakedown-timestamp", "value": "-5"})
    m.append(
        {
            "name": "timestamp in milliseconds",
            "field": "x-shakedown-timestamp",
            "value": "1767225600000",
        }
    )
    m.append({"name": "key id with space", "field": "x-shakedown-key-id", "value": "driver k1"})
    m.append({"name": "key id too long", "field": "x-shakedown-key-id", "value": "k" * 65})
    m.append(
        {"name": "signature uppercase", "field": "x-shakedown-signature", "value": good.upper()}
    )
    m.append(
        {
            "name": "signature base64",
            "field": "x-shakedown-signature",
            "value": base64.b64encode(bytes.fromhex(good)).decode(),
        }
    )
    m.append({"name": "missing signature", "field": "x-shakedown-signature", "value": None})
    return doc


# ----------------------------------------------------------------- scheme v2
# v2 inserts the audience (the agent's name) as the third line. "verify" cases
# are about the signature alone (the headers parse as v2, audience required,
# and the MAC matches), as for v1. "audience" cases all carry a valid
# signature: an agent accepts one only if the audience equals its own name.

LONG_NAME = "a" + "b-c.d_e" * 8 + "f" * 6  # 63 characters: the longest agent name
assert len(LONG_NAME) == 63


def canonical_v2(key_id, audience, method, ts, nonce, body):
    return "\n".join(
        [
            "SHAKEDOWN-HMAC-SHA256-V2",
            key_id,
            audience,
            method,
            str(ts),
            nonce,
            hashlib.sha256(body).hexdigest(),
        ]
    ).encode()


def sig_v2(key_id, audience, method, ts, nonce, body):
    return hmac.new(
        KEYS[key_id][1], canonical_v2(key_id, audience, method, ts, nonce, body), hashlib.sha256
    ).hexdigest()


LARGE_BODY = bytes((i * 7 + 3) % 256 for i in range(65536))

SIGN_CASES_V2 = [
    ("empty body", "driver-k1", "n1", GET, 1767225600, "AAAAAAAAAAAAAAAAAAAAAAAA", b""),
    (
        "create with unicode env",
        "driver-k1",
        "n1",
        CREATE,
        1767225600,
        "n0nce-with_dash-and_underscore",
        CREATE_BODY,
    ),
    (
        "every byte value",
        "driver-k2",
        "n2",
        CREATE,
        1767225601,
        "0123456789abcdef",
        bytes(range(256)),
    ),
    ("timestamp zero", "driver-k1", "n1", GET, 0, "zzzzzzzzzzzzzzzz", b""),
    ("largest timestamp", "driver-k1", "n1", GET, 999999999999, "Z" * 64, b"\x00"),
    (
        "longest agent name",
        "driver-k1",
        LONG_NAME,
        GET,
        1767225600,
        "AAAAAAAAAAAAAAAAAAAAAAAA",
        b"",
    ),
    (
        "one-character agent name",
        "driver-k1",
        "7",
        GET,
        1767225600,
        "AAAAAAAAAAAAAAAAAAAAAAAA",
        b"",
    ),
    (
        "dotted, dashed agent name",
        "driver-k1",
        "node-1.rack_2.example",
        CREATE,
        1767225600,
        "AAAAAAAAAAAAAAAAAAAAAAAA",
        CREATE_BODY,
    ),
    (
        "upper-case agent name",
        "driver-k1",
        "N1",
        GET,
        1767225600,
        "AAAAAAAAAAAAAAAAAAAAAAAA",
        b"",
    ),
    (
        "secret longer than a block, long key id",
        "long.key_id-with.every-allowed_char.0123456789abcdefghijklmnopqr",
        "n1",
        "/grpc.testing.Custom_Service.V2/Do_Thing",
        1767225600,
        "-_-_-_-_-_-_-_-_",
        b"\xff" * 1000,
    ),
    ("large body (64 KiB)", "driver-k1", "n1", CREATE, 1767225600, "L" * 24, LARGE_BODY),
]


def build_v2():
    doc = {
        "scheme": "SHAKEDOWN-HMAC-SHA256-V2",
        "spec": "docs/protocol.md",
        "keys": {
            kid: {"principal": p, "secret_b64": base64.b64encode(s).decode()}
            for kid, (p, s) in KEYS.items()
        },
        "sign": [],
        "verify": [],
        "audience": [],
        "malformed": [],
    }
    for name, kid, aud, method, ts, nonce, body in SIGN_CASES_V2:
        doc["sign"].append(
            {
                "name": name,
                "key_id": kid,
                "audience": aud,
                "method": method,
                "timestamp": ts,
                "nonce": nonce,
                "body_hex": body.hex(),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "canonical": canonical_v2(kid, aud, method, ts, nonce, body).decode(),
                "signature": sig_v2(kid, aud, method, ts, nonce, body),
            }
        )
    nonce0 = "AAAAAAAAAAAAAAAAAAAAAAAA"
    good = sig_v2("driver-k1", "n1", CREATE, 1767225600, nonce0, CREATE_BODY)
    v1_sig = sig("driver-k1", CREATE, 1767225600, nonce0, CREATE_BODY)

    def v(
        name,
        valid,
        body=CREATE_BODY,
        method=CREATE,
        key_id="driver-k1",
        ts=1767225600,
        nonce=nonce0,
        signature=good,
        audience="n1",
    ):
        md = {
            "x-shakedown-key-id": key_id,
            "x-shakedown-timestamp": str(ts),
            "x-shakedown-nonce": nonce,
            "x-shakedown-signature": signature,
        }
        if audience is not None:
            md["x-shakedown-audience"] = audience
        doc["verify"].append(
            {
                "name": name,
                "valid": valid,
                "method": method,
                "body_hex": body.hex(),
                "metadata": md,
            }
        )

    v("valid", True)
    v("audience header rewritten (signed for n1, header n2)", False, audience="n2")
    v("audience header differs only in case (signed for n1, header N1)", False, audience="N1")
    v("v1 signature offered with an audience header", False, signature=v1_sig)
    v("audience header stripped (not a v2 request)", False, audience=None)
    v("tampered body (one byte flipped)", False, body=CREATE_BODY[:-1] + b"\x00")
    v("appended unknown field", False, body=CREATE_BODY + b"\x78\x01")
    v("other method", False, method="/shakedown.agent.v1.Agent/RemoveContainer")
    v("other timestamp", False, ts=1767225601)
    v("other nonce", False, nonce="AAAAAAAAAAAAAAAAAAAAAAAB")
    v("signed with another key of the same principal", False, key_id="driver-k2")
    v("uppercase signature", False, signature=good.upper())
    v(
        "valid for the longest agent name",
        True,
        audience=LONG_NAME,
        signature=sig_v2("driver-k1", LONG_NAME, CREATE, 1767225600, nonce0, CREATE_BODY),
    )

    def a(name, accept, audience, agent_name):
        doc["audience"].append(
            {
                "name": name,
                "accept": accept,
                "agent_name": agent_name,
                "method": CREATE,
                "body_hex": CREATE_BODY.hex(),
                "metadata": {
                    "x-shakedown-key-id": "driver-k1",
                    "x-shakedown-audience": audience,
                    "x-shakedown-timestamp": "1767225600",
                    "x-shakedown-nonce": nonce0,
                    "x-shakedown-signature": sig_v2(
                        "driver-k1", audience, CREATE, 1767225600, nonce0, CREATE_BODY
                    ),
                },
            }
        )

    a("received by the agent it names", True, "n1", "n1")
    a("replayed to another agent (signed for n1, received by n2)", False, "n1", "n2")
    a("agent name differs only in case (signed for N1, received by n1)", False, "N1", "n1")
    a("agent name is a prefix (signed for n1, received by n10)", False, "n1", "n10")
    a("dotted name vs its first label", False, "node-1.rack_2.example", "node-1")
    a("longest agent name, received by itself", True, LONG_NAME, LONG_NAME)
    a("longest agent name, received by it minus one character", False, LONG_NAME, LONG_NAME[:-1])
    m = doc["malformed"]
    aud = "x-shakedown-audience"
    m.append({"name": "audience empty", "field": aud, "value": ""})
    m.append({"name": "audience too long (64)", "field": aud, "value": LONG_NAME + "g"})
    m.append({"name": "audience starting with a dot", "field": aud, "value": ".n1"})
    m.append({"name": "audience starting with a dash", "field": aud, "value": "-n1"})
    m.append({"name": "audience with a space", "field": aud, "value": "n 1"})
    m.append({"name": "audience with a colon (an address)", "field": aud, "value": "n1:7701"})
    m.append({"name": "audience non-ASCII", "field": aud, "value": "nöde"})
    m.append({"name": "audience with a newline", "field": aud, "value": "n1\nn2"})
    m.append({"name": "audience with a trailing newline", "field": aud, "value": "n1\n"})
    m.append({"name": "nonce too short", "field": "x-shakedown-nonce", "value": "abc"})
    m.append(
        {"name": "timestamp with leading zero", "field": "x-shakedown-timestamp", "value": "0123"}
    )
    m.append({"name": "key id too long", "field": "x-shakedown-key-id", "value": "k" * 65})
    m.append(
        {"name": "signature uppercase", "field": "x-shakedown-signature", "value": good.upper()}
    )
    m.append({"name": "missing signature", "field": "x-shakedown-signature", "value": None})
    return doc


OUTPUTS = {"hmac-v1.json": build, "hmac-v2.json": build_v2}

if __name__ == "__main__":
    vectors = Path(__file__).resolve().parent.parent / "tests/vectors"
    stale = []
    for name, make in OUTPUTS.items():
        out = vectors / name
        text = json.dumps(make(), indent=2, ensure_ascii=False) + "\n"
        if "--check" in sys.argv:
            if not out.exists() or out.read_text(encoding="utf-8") != text:
                stale.append(str(out))
            continue
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    if stale:
        print("stale: " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)
