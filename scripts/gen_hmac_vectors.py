#!/usr/bin/env python3
"""Writes tests/vectors/hmac-v1.json from an independent, spec-literal implementation.

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


if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "tests/vectors/hmac-v1.json"
    text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        sys.exit(0 if out.read_text(encoding="utf-8") == text else 1)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
