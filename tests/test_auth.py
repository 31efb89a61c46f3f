"""mTLS + HMAC against a real agent: every bad credential is refused, with no side effect."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import socket
import ssl
import time
import warnings
from collections.abc import Callable
from concurrent import futures

import docker
import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from driver.cli import main as cli_main
from driver.pki import make_ca, make_leaf
from driver.types import ContainerSpec
from driver.verify.auth import verify_auth
from shakedown import keyring, signing
from shakedown.agent.v1 import agent_pb2
from tests.support.agentproc import AgentProcess, wait_for

CREATE = "/shakedown.agent.v1.Agent/CreateContainer"
GET = "/shakedown.agent.v1.Agent/GetNodeInfo"


def _identity(agent: AgentProcess, principal: str) -> tuple[bytes, bytes]:
    d = agent.pki.dir
    return d.client_key(principal).read_bytes(), d.client_cert(principal).read_bytes()


def _raw_call(
    agent: AgentProcess,
    method: str,
    body: bytes,
    metadata: list[tuple[str, str]],
    identity: tuple[bytes, bytes] | None,
) -> grpc.StatusCode:
    ca = agent.pki.dir.ca_cert.read_bytes()
    if identity is None:
        channel = grpc.insecure_channel(agent.address)
    else:
        channel = grpc.secure_channel(agent.address, grpc.ssl_channel_credentials(ca, *identity))
    try:
        channel.unary_unary(method, request_serializer=None, response_deserializer=None)(
            body, metadata=metadata, timeout=10
        )
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()  # type: ignore[attr-defined]
    finally:
        channel.close()


def _count(docker_client: docker.DockerClient, node: str) -> int:
    return len(
        docker_client.containers.list(all=True, filters={"label": f"io.shakedown.node={node}"})
    )


def test_verify_auth_matrix_rejects_every_negative_case(agent_proc: AgentProcess) -> None:
    report = verify_auth(agent_proc.address, agent_proc.certs, agent_proc.keys)
    by_name = {c.name: c for c in report.cases}
    assert report.ok, "\n".join(f"{c.name}: {c.observed}" for c in report.failures)
    assert report.exit_code == 0
    assert [c.name for c in report.cases if c.verdict != "pass"] == [], "every case should pass"
    assert report.probe is not None and report.probe.agent
    assert report.probe.method == "/shakedown.agent.v1.Agent/GetNodeInfo"
    assert by_name["valid certificate and signature"].code == "OK"
    assert by_name["unsigned call"].code == "UNAUTHENTICATED"
    assert by_name["replayed nonce"].code == "UNAUTHENTICATED"
    assert by_name["tampered body"].code == "UNAUTHENTICATED"
    assert by_name["signature for another agent"].code == "UNAUTHENTICATED"
    assert "shakedown-verify-other-agent" in by_name["signature for another agent"].reason
    # The CRL refused it: a fresh certificate for the same (allow-listed) principal gets in.
    revoked = by_name["revoked certificate"]
    assert (revoked.code, revoked.result) == ("UNAUTHENTICATED", "rejected")
    assert (
        "revoked" in revoked.reason
        and "a fresh certificate for 'revoked' gets OK" in revoked.reason
    )
    assert by_name["principal not on the allow-list"].code == "PERMISSION_DENIED"
    role = by_name["observer kills a container"]
    assert (role.code, role.method) == (
        "PERMISSION_DENIED",
        "/shakedown.agent.v1.Agent/KillContainer",
    )
    # Handshake refusals are seen in the handshake itself, with their reason.
    for name in ("no client certificate", "certificate from another CA", "expired certificate"):
        assert (by_name[name].code, by_name[name].result) == ("TLS", "rejected"), by_name[name]
        assert by_name[name].reason and "TSI_DATA_CORRUPTED" not in by_name[name].reason
    assert by_name["plaintext (no TLS)"].reason.startswith("TLS required")
    assert len(report.cases) == 18


def test_verify_auth_without_keys_probes_the_agents_health(agent_proc: AgentProcess) -> None:
    """No keyring: the agent's own methods need a signature, its health service does not."""
    report = verify_auth(agent_proc.address, agent_proc.certs)
    by_name = {c.name: c for c in report.cases}
    assert report.probe is not None and report.probe.method == "/grpc.health.v1.Health/Check"
    assert report.exit_code == 0, [c.observed for c in report.cases if c.verdict != "pass"]
    assert by_name["valid certificate"].verdict == "pass"
    assert by_name["principal not on the allow-list"].code == "PERMISSION_DENIED"
    assert by_name["observer kills a container"].verdict == "skip"
    assert not [c for c in report.cases if c.category == "hmac"]


def test_verify_auth_cli_json_and_exit_code(agent_proc: AgentProcess, capsys) -> None:  # type: ignore[no-untyped-def]
    code = cli_main(
        [
            "verify",
            "auth",
            "--target",
            agent_proc.address,
            "--certs",
            str(agent_proc.certs),
            "--keys",
            str(agent_proc.keys),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["ok"] is True and out["exit_code"] == 0
    assert out["summary"]["FAIL"] == 0 and out["summary"]["inconclusive"] == 0
    assert out["summary"]["pass"] == 18
    assert out["probe"]["method"] == "/shakedown.agent.v1.Agent/GetNodeInfo"


def test_verify_auth_flags_an_endpoint_that_accepts_without_client_certs(
    pki,
    tmp_path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    """A weak server (TLS, no client auth, no HMAC) must make `verify auth` exit 1."""
    name = pki.agents[0]
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    creds = grpc.ssl_server_credentials(
        [(pki.dir.agent_key(name).read_bytes(), pki.dir.agent_cert(name).read_bytes())],
        require_client_auth=False,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        code = cli_main(
            ["verify", "auth", "--target", f"127.0.0.1:{port}", "--certs", str(pki.root), "--json"]
        )
        out = json.loads(capsys.readouterr().out)
    finally:
        server.stop(0)
    assert code == 1
    # No reflection, but health is served: it is the probe.
    assert out["probe"]["method"] == "/grpc.health.v1.Health/Check"
    by_name = {c["name"]: c for c in out["cases"]}
    assert (
        by_name["no client certificate"]["verdict"],
        by_name["no client certificate"]["code"],
    ) == (
        "FAIL",
        "OK",
    )
    assert by_name["plaintext (no TLS)"]["verdict"] == "pass"  # not flagged: TLS is required


def test_rejected_calls_have_no_side_effect(
    agent_proc: AgentProcess,
    client,
    docker_client,
    busybox_image,  # type: ignore[no-untyped-def]
) -> None:
    """Each bad credential, on a CreateContainer that would succeed, changes nothing."""
    with client.open_session(ttl=60) as session:
        body = agent_pb2.CreateContainerRequest(
            session_id=session.id,
            spec=ContainerSpec(image=busybox_image, command=["sleep", "30"]).to_pb(),
        ).SerializeToString()
        ring = keyring.load(agent_proc.keys)
        key = ring.signing_key("driver")
        viewer_key = ring.signing_key("viewer")
        driver_id = _identity(agent_proc, "driver")

        def sign(**kw) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
            args = {"key_id": key.id, "secret": key.secret, "method": CREATE, "body": body} | kw
            ts = args.pop("timestamp", None)
            return list(
                signing.sign(
                    args["key_id"],
                    args["secret"],
                    args["method"],
                    args["body"],
                    audience=agent_proc.name,
                    timestamp=ts,
                ).metadata()
            )

        ca_key, ca_pem = (
            agent_proc.pki.dir.ca_key.read_bytes(),
            agent_proc.pki.dir.ca_cert.read_bytes(),
        )
        foreign = make_leaf(*make_ca("elsewhere"), "driver")
        now = dt.datetime.now(dt.UTC)
        expired = make_leaf(
            ca_key,
            ca_pem,
            "driver",
            not_before=now - dt.timedelta(days=3),
            not_after=now - dt.timedelta(days=1),
        )
        cases: dict[str, Callable[[], grpc.StatusCode]] = {
            "unsigned": lambda: _raw_call(agent_proc, CREATE, body, [], driver_id),
            "wrong secret": lambda: _raw_call(
                agent_proc, CREATE, body, sign(secret=secrets.token_bytes(32)), driver_id
            ),
            "unknown key id": lambda: _raw_call(
                agent_proc, CREATE, body, sign(key_id="nobody-1"), driver_id
            ),
            "another principal's key": lambda: _raw_call(
                agent_proc,
                CREATE,
                body,
                sign(key_id=viewer_key.id, secret=viewer_key.secret),
                driver_id,
            ),
            "tampered body": lambda: _raw_call(
                agent_proc, CREATE, body, sign(body=body + b"\x18\x00"), driver_id
            ),
            "other method's signature": lambda: _raw_call(
                agent_proc, CREATE, body, sign(method=GET), driver_id
            ),
            "stale timestamp": lambda: _raw_call(
                agent_proc, CREATE, body, sign(timestamp=int(time.time()) - 120), driver_id
            ),
            "observer role": lambda: _raw_call(
                agent_proc,
                CREATE,
                body,
                sign(key_id=viewer_key.id, secret=viewer_key.secret),
                _identity(agent_proc, "viewer"),
            ),
            "revoked certificate": lambda: _raw_call(
                agent_proc, CREATE, body, sign(), _identity(agent_proc, "revoked")
            ),
            "foreign CA": lambda: _raw_call(agent_proc, CREATE, body, sign(), foreign),
            "expired certificate": lambda: _raw_call(agent_proc, CREATE, body, sign(), expired),
            "plaintext": lambda: _raw_call(agent_proc, CREATE, body, sign(), None),
        }
        before = _count(docker_client, agent_proc.name)
        codes = {name: fn() for name, fn in cases.items()}
        assert all(c != grpc.StatusCode.OK for c in codes.values()), codes
        assert codes["observer role"] == grpc.StatusCode.PERMISSION_DENIED
        assert codes["revoked certificate"] == grpc.StatusCode.UNAUTHENTICATED
        assert _count(docker_client, agent_proc.name) == before

        # A replay of a call that did succeed creates nothing more.
        md = sign()
        assert _raw_call(agent_proc, CREATE, body, md, driver_id) == grpc.StatusCode.OK
        assert _count(docker_client, agent_proc.name) == before + 1
        assert _raw_call(agent_proc, CREATE, body, md, driver_id) == grpc.StatusCode.UNAUTHENTICATED
        assert _count(docker_client, agent_proc.name) == before + 1


def test_typed_errors_carry_the_reason(agent_proc: AgentProcess) -> None:
    from shakedown.errors import AuthError, PolicyError, from_rpc_error

    with agent_proc.client(principal="viewer") as viewer:
        assert viewer.node_info().role == "observer"
        with pytest.raises(PolicyError, match="observer"):
            viewer.kill("anything")
    # An unsigned call surfaces as AuthError naming what is missing.
    ca = agent_proc.pki.dir.ca_cert.read_bytes()
    creds = grpc.ssl_channel_credentials(ca, *_identity(agent_proc, "driver"))
    with grpc.secure_channel(agent_proc.address, creds) as channel, pytest.raises(
        grpc.RpcError
    ) as err:
        channel.unary_unary(GET)(b"", timeout=10)
    typed = from_rpc_error(err.value)
    assert isinstance(typed, AuthError)
    assert "missing signature metadata" in str(typed)


def test_health_and_reflection_need_mtls_but_no_hmac(agent_proc: AgentProcess) -> None:
    ca = agent_proc.pki.dir.ca_cert.read_bytes()
    creds = grpc.ssl_channel_credentials(ca, *_identity(agent_proc, "viewer"))
    with grpc.secure_channel(agent_proc.address, creds) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="shakedown.agent.v1.Agent"), timeout=10
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert "shakedown.agent.v1.Agent" in names
    no_cert = grpc.ssl_channel_credentials(ca)
    with (
        grpc.secure_channel(agent_proc.address, no_cert) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def _tls_handshake(agent: AgentProcess, **ctx_kw: object) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(agent.pki.dir.ca_cert))
    ctx.load_cert_chain(agent.pki.dir.client_cert("driver"), agent.pki.dir.client_key("driver"))
    ctx.set_alpn_protocols(["h2"])
    ciphers = ctx_kw.pop("ciphers", None)
    if isinstance(ciphers, str):
        ctx.set_ciphers(ciphers)
    for attr, value in ctx_kw.items():
        setattr(ctx, attr, value)
    sock = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
    return ctx.wrap_socket(sock, server_hostname="127.0.0.1")


def test_tls_floor_is_1_2_and_1_3_is_preferred(agent_proc: AgentProcess) -> None:
    with _tls_handshake(agent_proc) as s:
        assert s.version() == "TLSv1.3"
    with _tls_handshake(agent_proc, maximum_version=ssl.TLSVersion.TLSv1_2) as s:
        assert s.version() == "TLSv1.2"
    # SECLEVEL=0 lets our own OpenSSL offer TLS 1.1, so a failure is the agent's refusal.
    with pytest.raises((ssl.SSLError, ConnectionError)) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _tls_handshake(
            agent_proc,
            minimum_version=ssl.TLSVersion.TLSv1,
            maximum_version=ssl.TLSVersion.TLSv1_1,
            ciphers="DEFAULT:@SECLEVEL=0",
        ).close()
    assert "NO_CIPHERS" not in str(err.value) and "NO_PROTOCOLS" not in str(err.value)


def test_certificate_rotation_needs_no_restart(fresh_agent: AgentProcess) -> None:
    from cryptography import x509

    from driver.pki import issue_agent

    agent = fresh_agent.start()

    def served_serial() -> int:
        with _tls_handshake(agent) as s:
            der = s.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    old = served_serial()
    issue_agent(agent.pki.root, agent.name, ["127.0.0.1", "localhost"], days=2)
    new = x509.load_pem_x509_certificate(agent.pki.dir.agent_cert(agent.name).read_bytes())
    wait_for(lambda: served_serial() == new.serial_number, 10, what="the rotated certificate")
    assert new.serial_number != old
    with agent.client() as c:  # and signed calls still work
        assert c.node_info().name == agent.name


def test_key_rotation_and_retirement_need_no_restart(fresh_agent: AgentProcess) -> None:
    from shakedown.errors import AuthError

    agent = fresh_agent.start()
    old_client = agent.client()
    assert old_client.node_info().principal == "driver"
    ring = keyring.load(agent.keys)
    old = ring.signing_key("driver")
    new = keyring.generate_key("driver", key_id="driver-rotated")
    retired = keyring.Key(old.id, old.principal, old.secret, active=False, created=old.created)
    keyring.save(
        keyring.Keyring((*[k for k in ring.keys if k.id != old.id], retired, new)), agent.keys
    )
    with agent.client() as new_client:
        assert new_client.node_info().principal == "driver"
    with pytest.raises(AuthError, match="retired"):
        wait_for(lambda: old_client.node_info() and False, 5, what="retirement")  # raises AuthError
    old_client.close()
