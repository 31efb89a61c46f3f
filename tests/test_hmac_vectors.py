"""The published HMAC vectors (tests/vectors/hmac-v1.json) against our implementation."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shakedown import signing
from shakedown.agent.v1 import agent_pb2

VECTORS = json.loads((Path(__file__).parent / "vectors" / "hmac-v1.json").read_text("utf-8"))
SECRETS = {kid: base64.b64decode(k["secret_b64"]) for kid, k in VECTORS["keys"].items()}


def test_vectors_are_what_the_generator_writes() -> None:
    import runpy

    gen = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "gen_hmac_vectors.py"))
    assert gen["build"]() == VECTORS


@pytest.mark.parametrize("case", VECTORS["sign"], ids=lambda c: c["name"])
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
        timestamp=case["timestamp"],
        nonce=case["nonce"],
    )
    assert headers.signature == case["signature"]
    assert signing.parse_metadata(headers.metadata()) == headers


@pytest.mark.parametrize("case", VECTORS["verify"], ids=lambda c: c["name"])
def test_verify(case: dict) -> None:
    body = bytes.fromhex(case["body_hex"])
    try:
        headers = signing.parse_metadata(case["metadata"])
    except signing.SignatureFormatError:
        assert not case["valid"]
        return
    ok = signing.signature_matches(SECRETS[headers.key_id], case["method"], body, headers)
    assert ok is case["valid"]


@pytest.mark.parametrize("case", VECTORS["malformed"], ids=lambda c: c["name"])
def test_malformed_metadata_is_rejected_naming_the_header(case: dict) -> None:
    valid = VECTORS["verify"][0]["metadata"]
    metadata = {k: v for k, v in valid.items() if k != case["field"]}
    if case["value"] is not None:
        metadata[case["field"]] = case["value"]
    with pytest.raises(signing.SignatureFormatError, match=case["field"]):
        signing.parse_metadata(metadata)


def test_vector_body_is_a_real_create_request() -> None:
    body = bytes.fromhex(VECTORS["sign"][1]["body_hex"])
    req = agent_pb2.CreateContainerRequest.FromString(body)
    assert req.session_id == "s-1"
    assert req.spec.image == "busybox"
    assert req.spec.env["GRÜSSE"] == "héllo ☃"


def test_duplicate_header_is_rejected() -> None:
    md = list(VECTORS["verify"][0]["metadata"].items())
    with pytest.raises(signing.SignatureFormatError, match="more than once"):
        signing.parse_metadata([*md, md[2]])
