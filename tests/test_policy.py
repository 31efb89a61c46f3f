"""agent.policy: every rule, plus a property that odd input only ever yields typed errors."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import policy
from agent.config import PolicyConfig
from agent.policy import HostLimits, validate_spec
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.errors import InvalidArgument, PolicyError

LIMITS = HostLimits(cpus=4, memory_bytes=8 << 30)
DEFAULT = PolicyConfig()
OPEN = PolicyConfig(allow_privileged=True, allow_host_network=True, allow_host_pid=True,
                    allow_host_ipc=True, allow_cap_add=True, allow_devices=True,
                    allow_bind_mounts=True)


def spec(**kw: object) -> pb.ContainerSpec:
    kw.setdefault("image", "busybox")
    return pb.ContainerSpec(**kw)  # type: ignore[arg-type]


def check(s: pb.ContainerSpec, p: PolicyConfig = DEFAULT) -> None:
    validate_spec(s, p, limits=LIMITS)


def invalid(s: pb.ContainerSpec, field: str, p: PolicyConfig = DEFAULT) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        check(s, p)
    assert err.value.field == field, err.value
    return err.value


def refused(s: pb.ContainerSpec, field: str) -> PolicyError:
    with pytest.raises(PolicyError) as err:
        check(s)
    assert err.value.field == field
    check(s, OPEN)  # the matching operator flag lifts the refusal
    return err.value


def test_minimal_and_full_specs_pass() -> None:
    check(spec())
    check(spec(
        name="web-1", image="registry.local:5000/team/app_x:v1.2-rc@sha256:" + "a" * 64,
        command=["sh", "-c", "echo hi"], entrypoint=["/bin/sh"], env={"A": "1", "B": "é🙂"},
        labels={"run": "r1", "k": ""}, ports=[pb.PortMapping(container_port=80, host_port=8080,
                                                             protocol="udp", host_ip="::1")],
        resources=pb.Resources(nano_cpus=2_000_000_000, memory_bytes=64 << 20),
        restart_policy=pb.RestartPolicy(name="on-failure", max_retries=3), network="net_a",
        working_dir="/srv", user="1000:1000", hostname="node-a", stop_signal="SIGTERM",
        mounts=[pb.Mount(type=pb.Mount.TYPE_VOLUME, source="data", target="/data"),
                pb.Mount(type=pb.Mount.TYPE_TMPFS, target="/tmp")],
        ipc_mode="shareable",
    ))


@pytest.mark.parametrize("image", [
    "busybox", "busybox:1.36", "library/busybox", "localhost:5000/a/b:t",
    "a.b-c/d__e/f-g:TAG_1.x", "busybox@sha256:" + "0" * 64, "ghcr.io/x/y",
])
def test_good_images(image: str) -> None:
    check(spec(image=image))


@pytest.mark.parametrize("image", [
    "", "Busybox", "busy box", "busybox:", ":tag", "busybox:-x", "a//b", "a/", "/a",
    "busybox@sha256:abc", "bus\u202ebox", "busy\x00box", "🙂", "busybox:" + "t" * 129,
    "a" * 256, "busybox\n", "-busybox",
])
def test_bad_images(image: str) -> None:
    invalid(spec(image=image), "spec.image")


@pytest.mark.parametrize("name", ["-x", ".x", "a b", "a/b", "é", "x" * 129, "a\x00"])
def test_bad_names(name: str) -> None:
    invalid(spec(name=name), "spec.name")


def test_args() -> None:
    invalid(spec(command=["a\x00b"]), "spec.command[0]")
    invalid(spec(entrypoint=["x", "y" * (64 * 1024 + 1)]), "spec.entrypoint[1]")
    invalid(spec(command=["x"] * 1025), "spec.command")
    check(spec(command=["é🙂\u202e", ""]))  # args are opaque text: only NUL and size matter


@pytest.mark.parametrize(("env", "field"), [
    ({"": "v"}, 'spec.env[""]'), ({"A=B": "v"}, 'spec.env["A=B"]'),
    ({"A": "v\x00"}, 'spec.env["A"]'), ({"A\u202e": "v"}, 'spec.env["A\\u202e"]'),
    ({"A\x01": "v"}, 'spec.env["A\\x01"]'), ({"K" * 1025: ""}, f'spec.env["{"K" * 64}..."]'),
])
def test_env(env: dict[str, str], field: str) -> None:
    assert invalid(spec(env=env), field).reason


def test_labels() -> None:
    err = invalid(spec(labels={"io.shakedown.x": "1"}), 'spec.labels["io.shakedown.x"]')
    assert "reserved" in err.reason
    invalid(spec(labels={"": "1"}), 'spec.labels[""]')
    invalid(spec(labels={"a\tb": "1"}), 'spec.labels["a\\tb"]')
    invalid(spec(labels={"a": "\x00"}), 'spec.labels["a"]')
    invalid(spec(labels={"a": "v" * 4097}), 'spec.labels["a"]')
    invalid(spec(labels={"k" * 257: ""}), f'spec.labels["{"k" * 64}..."]')
    check(spec(labels={"emoji🙂": "é🙂"}))


def test_ports() -> None:
    invalid(spec(ports=[pb.PortMapping(container_port=0)]), "spec.ports[0].container_port")
    invalid(spec(ports=[pb.PortMapping(container_port=80),
                        pb.PortMapping(container_port=70000)]), "spec.ports[1].container_port")
    invalid(spec(ports=[pb.PortMapping(container_port=1, host_port=65536)]),
            "spec.ports[0].host_port")
    invalid(spec(ports=[pb.PortMapping(container_port=1, protocol="TCP")]),
            "spec.ports[0].protocol")
    invalid(spec(ports=[pb.PortMapping(container_port=1, host_ip="localhost")]),
            "spec.ports[0].host_ip")


def test_resources() -> None:
    check(spec(resources=pb.Resources(nano_cpus=4_000_000_000, memory_bytes=8 << 30)))
    invalid(spec(resources=pb.Resources(nano_cpus=-1)), "spec.resources.nano_cpus")
    invalid(spec(resources=pb.Resources(nano_cpus=4_000_000_001)), "spec.resources.nano_cpus")
    invalid(spec(resources=pb.Resources(memory_bytes=(6 << 20) - 1)),
            "spec.resources.memory_bytes")
    invalid(spec(resources=pb.Resources(memory_bytes=(8 << 30) + 1)),
            "spec.resources.memory_bytes")
    invalid(spec(resources=pb.Resources(memory_bytes=-5)), "spec.resources.memory_bytes")


def test_restart_policy() -> None:
    for name in ("", "no", "always", "unless-stopped"):
        check(spec(restart_policy=pb.RestartPolicy(name=name)))
    invalid(spec(restart_policy=pb.RestartPolicy(name="sometimes")), "spec.restart_policy.name")
    invalid(spec(restart_policy=pb.RestartPolicy(name="always", max_retries=2)),
            "spec.restart_policy.max_retries")
    invalid(spec(restart_policy=pb.RestartPolicy(name="on-failure", max_retries=-1)),
            "spec.restart_policy.max_retries")


def test_misc_fields() -> None:
    invalid(spec(working_dir="srv"), "spec.working_dir")
    invalid(spec(user="root user"), "spec.user")
    invalid(spec(user="a:b:c"), "spec.user")
    invalid(spec(hostname="-bad"), "spec.hostname")
    invalid(spec(hostname="a" * 64), "spec.hostname")
    invalid(spec(hostname="a.b"), "spec.hostname")
    invalid(spec(stop_signal="SIGNOPE"), "spec.stop_signal")
    invalid(spec(network="bad net"), "spec.network")
    check(spec(network="none"))


def test_mounts() -> None:
    vol = pb.Mount.TYPE_VOLUME
    invalid(spec(mounts=[pb.Mount(type=vol, target="rel")]), "spec.mounts[0].target")
    invalid(spec(mounts=[pb.Mount(type=vol, target="/")]), "spec.mounts[0].target")
    invalid(spec(mounts=[pb.Mount(type=vol, source="../x", target="/d")]),
            "spec.mounts[0].source")
    invalid(spec(mounts=[pb.Mount(type=pb.Mount.TYPE_TMPFS, source="x", target="/d")]),
            "spec.mounts[0].source")
    invalid(spec(mounts=[pb.Mount(target="/d")]), "spec.mounts[0].type")
    check(spec(mounts=[pb.Mount(type=vol, target="/anon")]))
    bind = pb.Mount(type=pb.Mount.TYPE_BIND, source="/etc", target="/host-etc")
    err = refused(spec(mounts=[bind]), "spec.mounts[0].type")
    assert "--allow-bind-mounts" in err.reason
    invalid(spec(mounts=[pb.Mount(type=pb.Mount.TYPE_BIND, source="etc", target="/x")]),
            "spec.mounts[0].source", OPEN)


def test_refusals() -> None:
    err = refused(spec(privileged=True), "spec.privileged")
    assert err.reason == ("privileged containers are refused by this agent "
                          "(operator flag --allow-privileged)")
    assert "--allow-host-network" in refused(spec(network="host"), "spec.network").reason
    refused(spec(network="container:other"), "spec.network")
    refused(spec(pid_mode="host"), "spec.pid_mode")
    refused(spec(pid_mode="container:db"), "spec.pid_mode")
    refused(spec(ipc_mode="host"), "spec.ipc_mode")
    refused(spec(ipc_mode="container:db"), "spec.ipc_mode")
    refused(spec(cap_add=["NET_ADMIN"]), "spec.cap_add")
    refused(spec(devices=["/dev/net/tun"]), "spec.devices")
    invalid(spec(pid_mode="weird"), "spec.pid_mode")
    invalid(spec(ipc_mode="container:"), "spec.ipc_mode")
    invalid(spec(cap_add=["net admin"]), "spec.cap_add[0]", OPEN)
    invalid(spec(devices=["dev/x"]), "spec.devices[0]", OPEN)


def test_small_validators() -> None:
    assert policy.container_ref("abc_1.x-y") == "abc_1.x-y"
    for bad in ("", "-a", "a b", "x" * 257, "é", "a\x00"):
        with pytest.raises(InvalidArgument) as err:
            policy.container_ref(bad)
        assert err.value.field == "container"
    assert policy.parse_selector(["a", "b=c", "d=", "e=f=g"]) == [
        ("a", None), ("b", "c"), ("d", ""), ("e", "f=g")]
    with pytest.raises(InvalidArgument):
        policy.parse_selector(["=v"])
    assert policy.parse_signal("") == "SIGKILL"
    assert policy.parse_signal("KILL") == "SIGKILL"
    assert policy.parse_signal("term") == "SIGTERM"
    assert policy.parse_signal("SIGTERM") == "SIGTERM"
    assert policy.parse_signal("9") == "9"
    assert policy.parse_signal("SIGRTMIN+3") == "SIGRTMIN+3"
    for bad in ("0", "65", "SIGFOO", "-9", "٩", "K\x00ILL"):
        with pytest.raises(InvalidArgument) as err:
            policy.parse_signal(bad)
        assert err.value.field == "signal"
    assert policy.session_id("s-0123456789ab") == "s-0123456789ab"
    for bad in ("", "s-XYZ", "s-0123456789abc", "0123456789ab"):
        with pytest.raises(InvalidArgument):
            policy.session_id(bad)
    assert policy.ttl_seconds(0, default=30) == 30
    assert policy.ttl_seconds(86400) == 86400
    for n in (-1, 86401):
        with pytest.raises(InvalidArgument):
            policy.ttl_seconds(n)
    assert policy.timeout_seconds(3600) == 3600
    for n in (-1, 3601):
        with pytest.raises(InvalidArgument):
            policy.timeout_seconds(n)


# ---------------------------------------------------------------- property

odd = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "\x00", "\u202e", "🙂", "host", "container:x", "io.shakedown.x", "a" * 70000, "/", "-"])
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
uints = st.integers(min_value=0, max_value=2**32 - 1)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def specs(draw: st.DrawFn) -> pb.ContainerSpec:
    return pb.ContainerSpec(
        name=draw(odd), image=draw(odd | st.just("busybox")),
        command=draw(st.lists(odd, max_size=3)), entrypoint=draw(st.lists(odd, max_size=2)),
        env=draw(st.dictionaries(odd, odd, max_size=3)),
        labels=draw(st.dictionaries(odd, odd, max_size=3)),
        ports=[pb.PortMapping(container_port=draw(uints), host_port=draw(uints),
                              protocol=draw(odd), host_ip=draw(odd))
               for _ in range(draw(st.integers(0, 2)))],
        resources=pb.Resources(nano_cpus=draw(longs), memory_bytes=draw(longs)),
        restart_policy=pb.RestartPolicy(name=draw(odd), max_retries=draw(ints)),
        network=draw(odd), working_dir=draw(odd), user=draw(odd), hostname=draw(odd),
        pull_policy=draw(st.sampled_from(pb.PullPolicy.values())), stop_signal=draw(odd),
        init=draw(st.booleans()),
        mounts=[pb.Mount(type=draw(st.sampled_from(pb.Mount.Type.values())), source=draw(odd),
                         target=draw(odd),
                         read_only=draw(st.booleans()))
                for _ in range(draw(st.integers(0, 2)))],
        privileged=draw(st.booleans()), pid_mode=draw(odd), ipc_mode=draw(odd),
        cap_add=draw(st.lists(odd, max_size=2)), devices=draw(st.lists(odd, max_size=2)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.sampled_from([DEFAULT, OPEN]))
def test_property_only_typed_errors(s: pb.ContainerSpec, p: PolicyConfig) -> None:
    try:
        check(s, p)
    except (InvalidArgument, PolicyError) as exc:
        assert exc.field, exc
        assert exc.field.isascii() and exc.field.isprintable()  # it travels in metadata
        assert str(exc).startswith(exc.field)


@settings(max_examples=300, deadline=None)
@given(odd)
def test_property_small_validators(text: str) -> None:
    for fn in (policy.container_ref, policy.parse_signal, policy.session_id, policy.user,
               policy.session_name, lambda t: policy.parse_selector([t])):
        try:
            fn(text)
        except InvalidArgument as exc:
            assert exc.field
