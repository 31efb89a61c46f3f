"""DynamicClient: calls by name through reflection, v1 and v1alpha, against
our agent, the grpc-go test server and a descriptor-built server."""

from __future__ import annotations

from pathlib import Path

import pytest

from driver.dynamic import DynamicClient, Tls
from driver.dynamic.signing import agent_signer
from shakedown.errors import AuthError, InvalidArgument, NotFound, Unimplemented
from tests.support.agentproc import AgentProcess
from tests.support.authserver import auth_test_server
from tests.support.wktserver import wkt_server

AGENT = "shakedown.agent.v1.Agent"


def test_signed_call_to_the_agent(agent_proc: AgentProcess) -> None:
    signer = agent_signer(agent_proc.pki.keys, audience=agent_proc.name)
    with DynamicClient(agent_proc.address, Tls.from_certs_dir(agent_proc.pki.root), signer) as c:
        assert AGENT in c.services()
        assert {"grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"} <= set(c.services())
        assert c.reflection.version == "v1"
        info = c.call(f"{AGENT}/GetNodeInfo", {})
        assert info["name"] == agent_proc.name
        assert "T" in info["server_time"]  # a Timestamp, in its JSON form


def test_unsigned_call_to_the_agent_is_rejected(agent_proc: AgentProcess) -> None:
    with (DynamicClient(agent_proc.address, Tls.from_certs_dir(agent_proc.pki.root)) as c,
          pytest.raises(AuthError, match="x-shakedown")):
        c.call(f"{AGENT}/GetNodeInfo", {})


def test_wrong_field_is_refused_before_sending(agent_proc: AgentProcess) -> None:
    signer = agent_signer(agent_proc.pki.keys, audience=agent_proc.name)
    with DynamicClient(agent_proc.address, Tls.from_certs_dir(agent_proc.pki.root), signer) as c:
        with pytest.raises(InvalidArgument) as err:
            c.call(f"{AGENT}/ListContainers", {"sesion_id": "x"})
        assert err.value.field == "data.sesion_id"
        assert "session_id" in str(err.value) and "label_selector" in str(err.value)
        with pytest.raises(InvalidArgument) as err:
            c.call(f"{AGENT}/CreateContainer", {"spec": {"imag": "x"}})
        assert err.value.field == "data.spec.imag"
        with pytest.raises(NotFound) as nf:
            c.call(f"{AGENT}/Nope", {})
        assert nf.value.field == "method" and "GetNodeInfo" in str(nf.value)
        with pytest.raises(NotFound, match="not served"):
            c.call("no.such.Service/Call", {})


def test_grpc_go_server_over_mtls(pki, agent_name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tls = Tls.from_certs_dir(pki.root, server_name="localhost")
    with (auth_test_server(pki.root, agent_name, tmp_path) as target,
          DynamicClient(target, tls) as c):
        assert "grpc.testing.TestService" in c.services()
        assert c.call("grpc.testing.TestService/EmptyCall", {}) == {}
        out = c.call("/grpc.testing.TestService/UnaryCall", {"response_size": 3})
        assert out == {"payload": {"body": "AAAA"}}  # 3 zero bytes, base64
        text = c.describe("grpc.testing.TestService")
        assert "EmptyCall" in text and "UnaryCall" in text


@pytest.mark.parametrize("versions", [("v1",), ("v1alpha",), ("v1", "v1alpha")])
def test_reflection_versions_and_well_known_types(versions: tuple[str, ...]) -> None:
    with wkt_server(versions) as srv, DynamicClient(srv.address) as c:
        assert "wkt.v1.ProbeService" in c.services()
        assert c.reflection.version == versions[0]
        sent = {"ts": "2026-12-02T10:00:00Z", "d": "1.500s", "s": {"k": [1.0, "x", None]},
                "a": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "2s"},
                "e": {}}
        assert c.call("wkt.v1.ProbeService/Echo", sent) == sent
        got = list(c.call("wkt.v1.ProbeService/Repeat", {"count": 3, "d": "1s"}))
        assert got == [{"d": "1s"}, {"d": "1s", "count": 1}, {"d": "1s", "count": 2}]
        assert srv.calls == ["Echo", "Repeat"]


def test_bad_input_never_reaches_the_server() -> None:
    with wkt_server() as srv, DynamicClient(srv.address) as c:
        with pytest.raises(InvalidArgument) as err:
            c.call("wkt.v1.ProbeService/Echo", {"tss": "x"})
        assert err.value.field == "data.tss" and "ts" in str(err.value)
        with pytest.raises(InvalidArgument, match=r"ts field.*timestamp"):
            c.call("wkt.v1.ProbeService/Echo", {"ts": "yesterday"})
        assert srv.calls == []


def test_no_reflection_is_a_clear_error() -> None:
    with (wkt_server(()) as srv, DynamicClient(srv.address) as c,
          pytest.raises(Unimplemented, match="does not serve reflection")):
        c.services()
