"""`shakedown verify auth` against someone else's gRPC service: the grpc-go server in
tools/authtestserver (mTLS, a CN allow-list in an interceptor, reflection, NO health).

Each verdict is asserted exactly, what must not be flagged as well as what must,
through the real CLI in a subprocess, so its stdout, stderr and exit status are
what a user sees.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from driver.pki import revoke
from tests.support.agentproc import PkiFixture, make_pki
from tests.support.authserver import REPO, auth_test_server

EMPTY_CALL = "/grpc.testing.TestService/EmptyCall"
UNARY_CALL = "/grpc.testing.TestService/UnaryCall"
MTLS = [
    "valid certificate",
    "plaintext (no TLS)",
    "no client certificate",
    "certificate from another CA",
    "expired certificate",
    "revoked certificate",
    "principal not on the allow-list",
]
AGENT_ONLY = [
    "observer kills a container",
    "unsigned call",
    "wrong secret for the key id",
    "unknown key id",
    "key bound to another principal",
    "tampered body",
    "signature for another method",
    "signature for another agent",
    "stale timestamp (-10 min)",
    "future timestamp (+10 min)",
    "replayed nonce",
]
# gRPC core's log lines: "E0000 00:00:1700000000.123456 ..." (any severity).
GRPC_CORE_LOG = re.compile(r"^[EWID]\d{4} \d\d:\d\d", re.M)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFixture:
    # "revoked" may call (when allow-listed) but its certificate is on the CRL.
    fixture = make_pki(
        tmp_path_factory.mktemp("vauth-go") / "certs", ("srv",), {"revoked": "admin"}
    )
    revoke(fixture.root, "revoked")
    return fixture


def verify(target: str, pki: PkiFixture, *extra: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "driver.cli", "verify", "auth", "--target", target,
         "--certs", str(pki.root), "--timeout", "5", *extra],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip
    assert not GRPC_CORE_LOG.search(proc.stderr), proc.stderr
    assert "TSI_DATA_CORRUPTED" not in proc.stdout + proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def verify_json(target: str, pki: PkiFixture, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, err = verify(target, pki, "--json", *extra)
    assert err == "", err
    report = json.loads(out)
    assert report["exit_code"] == code
    return code, report


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cases = {c["name"]: c for c in report["cases"]}
    assert len(cases) == len(report["cases"])
    return cases


def check_table(out: str) -> list[str]:
    lines = out.splitlines()
    too_wide = [line for line in lines if len(line) > 100]
    assert not too_wide, too_wide
    return lines


def row(lines: list[str], name: str) -> str:
    return next(line for line in lines if line.startswith(name + " "))


def test_allow_list_holds_every_case_exact(pki: PkiFixture, tmp_path: Path) -> None:
    with auth_test_server(pki.root, "srv", tmp_path, allow="driver", crl=pki.root / "crl.pem") as t:
        code, report = verify_json(t, pki)
        tcode, out, err = verify(t, pki)
    assert code == 0 and tcode == 0 and err == ""
    assert report["ok"] is True
    assert report["probe"]["method"] == EMPTY_CALL and report["probe"]["source"] == "reflection"
    assert report["probe"]["agent_service"] is False
    cases = by_name(report)
    assert list(cases) == [*MTLS, "observer kills a container"]
    expect = {
        "valid certificate": ("accept", "pass", "accepted", "OK", "OK"),
        "plaintext (no TLS)": ("reject", "pass", "rejected", "TLS", "TLS required"),
        "no client certificate": ("reject", "pass", "rejected", "TLS", "certificate required"),
        "certificate from another CA": ("reject", "pass", "rejected", "TLS", "unknown ca"),
        "expired certificate": ("reject", "pass", "rejected", "TLS", "certificate expired"),
        "revoked certificate": ("reject", "pass", "rejected", "TLS", "bad certificate"),
        "principal not on the allow-list": (
            "reject", "pass", "rejected", "PERMISSION_DENIED", "is not allowed"),
    }  # fmt: skip
    for name, (expected, verdict, result, status, reason) in expect.items():
        c = cases[name]
        got = (c["expected"], c["verdict"], c["result"], c["code"])
        assert got == (expected, verdict, result, status), (name, c)
        assert reason in c["reason"], (name, c)
        assert "TLS alert" in c["reason"] or name in (
            "valid certificate",
            "plaintext (no TLS)",
            "principal not on the allow-list",
        )
    # The CRL, not the allow-list, refused the revoked certificate: a fresh one gets further.
    assert "a fresh certificate for 'revoked' gets PERMISSION_DENIED" in cases[
        "revoked certificate"]["reason"]  # fmt: skip
    assert cases["valid certificate"]["method"] == EMPTY_CALL
    assert cases["principal not on the allow-list"]["method"] == EMPTY_CALL
    role = cases["observer kills a container"]
    assert (role["verdict"], role["result"]) == ("not applicable", "not applicable")
    lines = check_table(out)
    assert EMPTY_CALL in lines[0]
    assert not [line for line in lines if " FAIL " in line or "inconclusive" in line]
    assert re.search(r"^principal not on the allow-list\s+reject\s+pass\s+rejected: "
                     r"PERMISSION_DENIED", out, re.M)  # fmt: skip
    assert "certificate required (TLS alert)" in row(lines, "no client certificate")
    assert out.endswith("every case as expected\n7 pass, 1 not applicable; exit 0\n")


def test_allow_list_off_is_reported_as_the_flaw(pki: PkiFixture, tmp_path: Path) -> None:
    with auth_test_server(pki.root, "srv", tmp_path, allow="", crl=pki.root / "crl.pem") as t:
        code, report = verify_json(t, pki)
        tcode, out, _ = verify(t, pki)
    assert code == 1 and tcode == 1
    cases = by_name(report)
    intruder = cases["principal not on the allow-list"]
    assert (intruder["verdict"], intruder["result"], intruder["code"]) == ("FAIL", "accepted", "OK")
    # Not flagged: everything the TLS layer still refuses, and the control.
    flagged = [c["name"] for c in report["cases"] if c["verdict"] == "FAIL"]
    assert flagged == ["principal not on the allow-list"]
    assert all(cases[n]["verdict"] == "pass" for n in MTLS if n != intruder["name"])
    lines = check_table(out)
    assert re.match(r"principal not on the allow-list\s+reject\s+FAIL\s+accepted: OK",
                    row(lines, "principal not on the allow-list"))  # fmt: skip
    assert "FLAW: 1 should-be-rejected case(s) ACCEPTED (principal not on the allow-list)" in out
    assert out.endswith("\n6 pass, 1 FAIL, 1 not applicable; exit 1\n")


def test_revocation_unproven_without_a_crl_is_inconclusive(pki: PkiFixture, tmp_path: Path) -> None:
    """No CRL on the server: the revoked cert is refused only because its CN is off the list."""
    with auth_test_server(pki.root, "srv", tmp_path, allow="driver") as t:
        code, report = verify_json(t, pki)
    assert code == 2
    cases = by_name(report)
    rev = cases["revoked certificate"]
    assert (rev["verdict"], rev["result"], rev["code"]) == (
        "inconclusive",
        "inconclusive",
        "PERMISSION_DENIED",
    )
    assert "refused the same way, so revocation is not shown" in rev["reason"]
    assert [c["name"] for c in report["cases"] if c["verdict"] == "inconclusive"] == [rev["name"]]
    assert not [c for c in report["cases"] if c["verdict"] == "FAIL"]


def test_unimplemented_method_is_inconclusive_never_accepted(
    pki: PkiFixture, tmp_path: Path
) -> None:
    with auth_test_server(pki.root, "srv", tmp_path, allow="", crl=pki.root / "crl.pem") as t:
        code, report = verify_json(t, pki, "--method", "/grpc.testing.TestService/NoSuchMethod")
        tcode, out, _ = verify(t, pki, "--method", "grpc.testing.TestService/NoSuchMethod")
    # The allow-list is off, yet nothing may be called "accepted": nothing got through.
    assert code == 2 and tcode == 2
    cases = by_name(report)
    assert report["probe"]["method"] == "/grpc.testing.TestService/NoSuchMethod"
    assert report["probe"]["source"] == "--method"
    for name in ("valid certificate", "principal not on the allow-list"):
        c = cases[name]
        assert (c["verdict"], c["result"], c["code"]) == (
            "inconclusive",
            "inconclusive",
            "UNIMPLEMENTED",
        ), c
    assert not [c for c in report["cases"] if c["result"] == "accepted"]
    # Handshake refusals need no method: still shown as such.
    for name in ("no client certificate", "certificate from another CA", "expired certificate"):
        assert (cases[name]["verdict"], cases[name]["code"]) == ("pass", "TLS"), cases[name]
    check_table(out)
    assert "INCONCLUSIVE: the valid call was not accepted" in out


def test_interceptor_answering_unimplemented_stays_inconclusive(
    pki: PkiFixture, tmp_path: Path
) -> None:
    """An allow-list that hides methods (UNIMPLEMENTED) from strangers: not accepted, not
    proven rejected either."""
    crl = pki.root / "crl.pem"
    with auth_test_server(pki.root, "srv", tmp_path, crl=crl, deny_code="unimplemented") as t:
        code, report = verify_json(t, pki)
    assert code == 2
    cases = by_name(report)
    intruder = cases["principal not on the allow-list"]
    assert (intruder["verdict"], intruder["code"]) == ("inconclusive", "UNIMPLEMENTED")
    assert cases["valid certificate"]["verdict"] == "pass"
    assert [c["name"] for c in report["cases"] if c["verdict"] not in ("pass", "not applicable")
            ] == [intruder["name"]]  # fmt: skip


def test_agent_cases_are_not_applicable_with_keys(pki: PkiFixture, tmp_path: Path) -> None:
    with auth_test_server(pki.root, "srv", tmp_path, crl=pki.root / "crl.pem") as t:
        code, report = verify_json(t, pki, "--keys", str(pki.keys))
        tcode, out, _ = verify(t, pki, "--keys", str(pki.keys))
    assert code == 0 and tcode == 0
    cases = by_name(report)
    assert list(cases) == [*MTLS, *AGENT_ONLY]
    for name in AGENT_ONLY:
        assert (cases[name]["verdict"], cases[name]["result"]) == (
            "not applicable",
            "not applicable",
        ), cases[name]
        assert cases[name]["method"] == ""  # nothing was sent
    assert all(cases[n]["verdict"] == "pass" for n in MTLS)
    assert "shakedown.agent.v1.Agent" in report["not_applicable_reason"]
    lines = check_table(out)
    assert not any(line.startswith(AGENT_ONLY[1]) for line in lines)  # no row of their own
    why = [line for line in lines if line.startswith("not applicable (11): ")]
    assert len(why) == 1 and "no shakedown.agent.v1.Agent at " in why[0]
    assert "UNIMPLEMENTED" not in out and "FAIL" not in out


def test_method_and_data_an_application_error_means_accepted(
    pki: PkiFixture, tmp_path: Path
) -> None:
    """UnaryCall with response_size -1 fails INVALID_ARGUMENT in the handler: that call got past
    authorization, so with the allow-list off the intruder is "accepted"."""
    args = ("--method", UNARY_CALL, "--data", '{"response_size": -1}')
    with auth_test_server(pki.root, "srv", tmp_path, allow="", crl=pki.root / "crl.pem") as t:
        code, report = verify_json(t, pki, *args)
        bad_code, _, bad_err = verify(t, pki, "--method", UNARY_CALL, "--data", '{"nope": 1}')
    assert code == 1
    assert report["probe"]["request"] == {"response_size": -1}
    cases = by_name(report)
    for name in ("valid certificate", "principal not on the allow-list"):
        assert (cases[name]["result"], cases[name]["code"]) == ("accepted", "INVALID_ARGUMENT")
        assert cases[name]["method"] == UNARY_CALL
    assert cases["valid certificate"]["verdict"] == "pass"
    assert cases["principal not on the allow-list"]["verdict"] == "FAIL"
    assert bad_code == 2 and "--data" in bad_err and "nope" in bad_err


def test_without_reflection_or_health_nothing_is_accepted(pki: PkiFixture, tmp_path: Path) -> None:
    crl = pki.root / "crl.pem"
    with auth_test_server(pki.root, "srv", tmp_path, allow="", crl=crl, reflection=False) as t:
        code, report = verify_json(t, pki)
        named_code, named = verify_json(t, pki, "--method", EMPTY_CALL)
    assert code == 2
    assert report["probe"]["source"] == "fallback"
    assert "name one with --method" in report["probe"]["note"]
    assert not [c for c in report["cases"] if c["result"] == "accepted"]
    # Named, the method works without reflection (an empty request), and the flaw shows.
    assert named_code == 1
    intruder = by_name(named)["principal not on the allow-list"]
    assert (intruder["verdict"], intruder["code"]) == ("FAIL", "OK")


def test_json_has_every_field(pki: PkiFixture, tmp_path: Path) -> None:
    with auth_test_server(pki.root, "srv", tmp_path, crl=pki.root / "crl.pem") as t:
        _, report = verify_json(t, pki, "--keys", str(pki.keys))
    fields = {"name", "category", "expected", "result", "verdict", "code", "reason", "method",
              "observed"}  # fmt: skip
    for c in report["cases"]:
        assert fields <= set(c), c
        assert c["verdict"] and c["result"] and c["reason"], c
    assert set(report["probe"]) >= {"method", "source", "note", "request", "services"}
    assert set(report["summary"]) == {"pass", "FAIL", "inconclusive", "not applicable", "skip"}
    assert report["summary"]["pass"] == 7 and report["summary"]["not applicable"] == 11


def _service(methods: list[tuple[str, str, bool, int]]) -> list[Any]:
    """A service in a private pool: (name, input message, server-streaming, idempotency)."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    fdp = descriptor_pb2.FileDescriptorProto(
        name="vauth_rank.proto", package="vauth", syntax="proto2"
    )
    fdp.message_type.add(name="Nothing")
    req = fdp.message_type.add(name="NeedsId")
    req.field.add(
        name="id", number=1, type=9, label=descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED
    )
    opt = fdp.message_type.add(name="Optional")
    opt.field.add(name="n", number=1, type=5, label=1)
    svc = fdp.service.add(name="Svc")
    for name, inp, streaming, level in methods:
        m = svc.method.add(name=name, input_type=f".vauth.{inp}", output_type=".vauth.Nothing",
                           server_streaming=streaming)  # fmt: skip
        if level:
            m.options.idempotency_level = level  # type: ignore[assignment]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return list(pool.FindServiceByName("vauth.Svc").methods)


def test_auto_discovery_picks_a_safe_empty_method() -> None:
    from google.protobuf import descriptor_pb2

    from driver.verify.probemethod import rank

    no_side_effects = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    methods = _service([
        ("DeleteAll", "Nothing", False, 0),      # sounds like a change: never auto-called
        ("Watch", "Nothing", True, 0),           # streaming
        ("Lookup", "NeedsId", False, 0),         # a required field: cannot be empty
        ("Frobnicate", "Optional", False, 0),
        ("Zap", "Nothing", False, 0),
        ("GetStatus", "Nothing", False, 0),
        ("Describe", "Optional", False, no_side_effects),
    ])  # fmt: skip
    assert [m.name for m in rank(methods)] == ["Describe", "GetStatus", "Zap", "Frobnicate"]


def test_bad_method_and_data_are_usage_errors(pki: PkiFixture) -> None:
    cases = [
        (("--method", "not a method"), "--method 'not a method': want /package.Service/Method"),
        (("--data", "{}"), "--data: needs --method"),
        (("--method", EMPTY_CALL, "--data", "[1]"), "--data: must be a JSON object"),
        (("--method", EMPTY_CALL, "--data", "{x"), "--data: not JSON"),
        ((), "--target 'nohost': expected HOST:PORT"),
    ]
    for extra, message in cases:
        target = "nohost" if not extra else "127.0.0.1:1"
        code, out, err = verify(target, pki, *extra)
        assert code == 2 and out == "" and message in err, (extra, err)


def test_a_server_we_do_not_trust_proves_nothing(pki: PkiFixture, tmp_path: Path) -> None:
    """Our own refusal of the server's certificate is not the server refusing a client."""
    with auth_test_server(pki.root, "srv", tmp_path, allow="", crl=pki.root / "crl.pem") as t:
        code, report = verify_json(t, pki, "--server-name", "elsewhere")
    assert code == 2
    cases = by_name(report)
    assert cases["plaintext (no TLS)"]["verdict"] == "pass"  # no certificate involved
    for name in MTLS[2:]:
        c = cases[name]
        assert (c["verdict"], c["code"]) == ("inconclusive", "TLS"), c
        assert "we do not trust the server certificate" in c["reason"], c
    assert cases["valid certificate"]["verdict"] == "inconclusive"
