"""The published HMAC vectors (tests/vectors/hmac-v1.json, hmac-v2.json) against our code."""

from __future__ import annotations

import base64
import json
import runpy
from pathlib import Path

import pytest

from shakedown import signing
from shakedown.agent.v1 import agent_pb2

HERE = Path(__file__).parent
V1 = json.loads((HERE / "vectors" / "hmac-v1.json").read_text("utf-8"))
V2 = json.loads((HERE / "vectors" / "hmac-v2.json").read_text("utf-8"))
SECRETS = {kid: base64.b64decode(k["secret_b64"]) for kid, k in V1["keys"].items()}
SECRETS_V2 = {kid: base64.b64decode(k["secret_b64"]) for kid, k in V2["keys"].items()}


def test_vectors_are_what_the_generator_writes() -> None:
    gen = runpy.run_path(str(HERE.parent / "scripts" / "gen_hmac_vectors.py"))
    assert gen["build"]() == V1
    assert gen["build_v2"]() == V2


# ------------------------------------------------------------------ v1 (legacy)


@pytest.mark.parametrize("case", V1["sign"], ids=lambda c: c["name"])
def test_sign(case: dict) -> None:
    body = bytes.fromhex(case["body_hex"])
    canonical = signing.canonical_string(
        case["key_id"], case["method"], case["timestamp"], case["nonce"], body
    )
    assert canonical.decode() == case["canonical"]
    assert signing.body_digest(body) == case["body_sha256"]
    headers = signing.sign(
        case["key_id"],
        SECRETS[case["key_id"]],
        case["method"],
        body,
        audience=None,
        timestamp=case["timestamp"],
        nonce=case["nonce"],
    )
    assert headers.signature == case["signature"]
    assert headers.scheme == signing.SCHEME_V1
    assert signing.parse_metadata(headers.metadata()) == headers


@pytest.mark.parametrize("case", V1["verify"], ids=lambda c: c["name"])
def test_verify(case: dict) -> None:
    body = bytes.fromhex(case["body_hex"])
    try:
        headers = signing.parse_metadata(case["metadata"])
    except signing.SignatureFormatError:
        assert not case["valid"]
        return
    ok = signing.signature_matches(SECRETS[headers.key_id], case["method"], body, headers)
    assert ok is case["valid"]


@pytest.mark.parametrize("case", V1["malformed"], ids=lambda c: c["name"])
def test_malformed_metadata_is_rejected_naming_the_header(case: dict) -> None:
    valid = V1["verify"][0]["metadata"]
    metadata = {k: v for k, v in valid.items() if k != case["field"]}
    if case["value"] is not None:
        metadata[case["field"]] = case["value"]
    with pytest.raises(signing.SignatureFormatError, match=case["field"]):
        signing.parse_metadata(metadata)


def test_vector_body_is_a_real_create_request() -> None:
    body = bytes.fromhex(V1["sign"][1]["body_hex"])
    req = agent_pb2.CreateContainerRequest.FromString(body)
    assert req.session_id == "s-1"
    assert req.spec.image == "busybox"
    assert req.spec.env["GRÜSSE"] == "héllo ☃"
    assert V2["sign"][1]["body_hex"] == V1["sign"][1]["body_hex"]


def test_duplicate_header_is_rejected() -> None:
    md = list(V1["verify"][0]["metadata"].items())
    with pytest.raises(signing.SignatureFormatError, match="more than once"):
        signing.parse_metadata([*md, md[2]])


# ------------------------------------------------------------------ v2


@pytest.mark.parametrize("case", V2["sign"], ids=lambda c: c["name"])
def test_sign_v2(case: dict) -> None:
    body = bytes.fromhex(case["body_hex"])
    canonical = signing.canonical_string(
        case["key_id"],
        case["method"],
        case["timestamp"],
        case["nonce"],
        body,
        audience=case["audience"],
    )
    assert canonical.decode() == case["canonical"]
    assert signing.body_digest(body) == case["body_sha256"]
    headers = signing.sign(
        case["key_id"],
        SECRETS_V2[case["key_id"]],
        case["method"],
        body,
        audience=case["audience"],
        timestamp=case["timestamp"],
        nonce=case["nonce"],
    )
    assert headers.signature == case["signature"]
    assert headers.scheme == signing.SCHEME_V2
    assert dict(headers.metadata())[signing.AUDIENCE] == case["audience"]
    assert signing.parse_metadata(headers.metadata()) == headers


def signature_valid_v2(case: dict) -> bool:
    """The "verify" rule, for every language: v2 headers parse and the MAC matches."""
    body = bytes.fromhex(case["body_hex"])
    try:
        headers = signing.parse_metadata(case["metadata"])
    except signing.SignatureFormatError:
        return False
    if headers.scheme != signing.SCHEME_V2 or headers.key_id not in SECRETS_V2:
        return False
    return signing.signature_matches(SECRETS_V2[headers.key_id], case["method"], body, headers)


@pytest.mark.parametrize("case", V2["verify"], ids=lambda c: c["name"])
def test_verify_v2(case: dict) -> None:
    assert signature_valid_v2(case) is case["valid"]


@pytest.mark.parametrize("case", V2["audience"], ids=lambda c: c["name"])
def test_audience_v2(case: dict) -> None:
    """Every case's signature is valid: only the audience decides."""
    assert signature_valid_v2(case)
    headers = signing.parse_metadata(case["metadata"])
    assert (headers.audience == case["agent_name"]) is case["accept"]


def test_the_agent_decides_the_audience_cases_as_the_vectors_say(tmp_path: Path) -> None:
    """agent.auth.Authenticator, named as each case's agent, on the vector's bytes."""
    from agent.auth import Authenticator
    from agent.identity import Caller
    from shakedown import keyring
    from shakedown.errors import AuthError

    ring = keyring.Keyring(
        tuple(
            keyring.Key(kid, k["principal"], base64.b64decode(k["secret_b64"]))
            for kid, k in V2["keys"].items()
        )
    )
    keyring.save(ring, tmp_path / "keys.json")
    for case in V2["audience"]:
        auth = Authenticator(
            tmp_path / "keys.json",
            {"driver": "admin"},
            name=case["agent_name"],
            clock=lambda: 1767225600.0,
        )
        md = list(case["metadata"].items())
        body = bytes.fromhex(case["body_hex"])
        if case["accept"]:
            auth.verify(Caller("driver", "admin"), case["method"], body, md)
        else:
            with pytest.raises(AuthError, match="audience") as err:
                auth.verify(Caller("driver", "admin"), case["method"], body, md)
            assert repr(case["agent_name"]) in str(err.value), case["name"]


@pytest.mark.parametrize("case", V2["malformed"], ids=lambda c: c["name"])
def test_malformed_v2_metadata_is_rejected_naming_the_header(case: dict) -> None:
    valid = V2["verify"][0]["metadata"]
    metadata = {k: v for k, v in valid.items() if k != case["field"]}
    if case["value"] is not None:
        metadata[case["field"]] = case["value"]
    with pytest.raises(signing.SignatureFormatError, match=case["field"]):
        signing.parse_metadata(metadata)


def test_audience_rule_is_the_agent_name_rule() -> None:
    from shakedown.pkilayout import NAME_RE

    assert signing.AUDIENCE_RE.pattern == NAME_RE.pattern
