"""The Agent servicer: validate each request (policy.py), then call the runtime/sessions.

Handlers raise ShakedownError subclasses; the guard interceptor turns them into
statuses. The gRPC context is touched only by Events, to send initial metadata
once its subscription is live.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from agent import policy
from agent.config import AgentConfig
from agent.faults.manager import FaultManager, fault_id
from agent.identity import Caller, current_caller
from agent.limits import CallLimits
from agent.runtime import DockerRuntime
from agent.sessions import SessionManager
from shakedown.agent.v1 import agent_pb2 as pb
from shakedown.agent.v1 import agent_pb2_grpc
from shakedown.errors import InvalidArgument

_Ctx = Any  # grpc.aio.ServicerContext (None in tests); errors travel as exceptions


def _caller() -> Caller | None:
    try:
        return current_caller()
    except LookupError:  # called outside the guard (tests): no identity to check
        return None


def _principal() -> str:
    caller = _caller()
    return caller.principal if caller else ""


def _grace(request: pb.StopContainerRequest | pb.RestartContainerRequest) -> int | None:
    """The optional stop timeout; unset means the engine's default (10 s)."""
    if not request.HasField("timeout_seconds"):
        return None
    return policy.timeout_seconds(request.timeout_seconds)


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(self, config: AgentConfig, runtime: DockerRuntime, sessions: SessionManager,
                 version: str, faults: FaultManager | None = None) -> None:
        self.config = config
        self.runtime = runtime
        self.sessions = sessions
        self.faults = faults or FaultManager(runtime, sessions, config.state_dir)
        self.faults.allow_proxy_bind = config.policy.allow_proxy_bind
        self.version = version
        self.limits = CallLimits(config.max_long_calls_per_principal)
        self._node_info: tuple[Any, pb.NodeInfo] | None = None

    # ------------------------------------------------------------ node

    async def GetNodeInfo(self, request: pb.GetNodeInfoRequest, context: _Ctx) -> pb.NodeInfo:
        facts = await self.runtime.node_info()
        if self._node_info is None or self._node_info[0] is not facts:
            # Built once per facts object (they are cached by the runtime): only the
            # caller and the clock differ between calls.
            self._node_info = (facts, self._build_node_info(facts))
        caller = _caller()
        info = pb.NodeInfo()
        info.CopyFrom(self._node_info[1])
        if caller:
            info.principal, info.role = caller.principal, caller.role
        info.server_time.GetCurrentTime()
        return info

    def _build_node_info(self, facts: Any) -> pb.NodeInfo:
        p = self.config.policy
        return pb.NodeInfo(
            name=self.config.name, agent_version=self.version,
            docker_version=facts.docker_version, docker_api_version=facts.docker_api_version,
            kernel_version=facts.kernel_version, operating_system=facts.operating_system,
            architecture=facts.architecture, cpus=facts.cpus, memory_bytes=facts.memory_bytes,
            capabilities=[pb.Capability(name=c.name, available=c.available, detail=c.detail)
                          for c in facts.capabilities],
            policy=pb.Policy(
                allow_privileged=p.allow_privileged, allow_host_network=p.allow_host_network,
                allow_host_pid=p.allow_host_pid, allow_host_ipc=p.allow_host_ipc,
                allow_cap_add=p.allow_cap_add, allow_devices=p.allow_devices,
                allow_bind_mounts=p.allow_bind_mounts, adopt_selectors=list(self.config.adopt),
                allow_public_ports=p.allow_public_ports, allow_registries=list(p.allow_registries),
                allow_proxy_bind=p.allow_proxy_bind,
            ),
        )

    # ------------------------------------------------------------ containers

    async def CreateContainer(self, request: pb.CreateContainerRequest,
                              context: _Ctx) -> pb.Container:
        policy.session_id(request.session_id)
        policy.validate_spec(request.spec, self.config.policy,
                             limits=await self.runtime.limits())
        return await self.sessions.create_container(request.session_id, _caller(),
                                                    request.spec, request.start,
                                                    self.config.policy)

    async def StartContainer(self, request: pb.StartContainerRequest,
                             context: _Ctx) -> pb.Container:
        return await self.runtime.start(policy.container_ref(request.container))

    async def StopContainer(self, request: pb.StopContainerRequest,
                            context: _Ctx) -> pb.Container:
        ref, grace = policy.container_ref(request.container), _grace(request)
        with self.limits.hold(_principal(), "StopContainer"):
            return await self.runtime.stop(ref, grace)

    async def KillContainer(self, request: pb.KillContainerRequest,
                            context: _Ctx) -> pb.Container:
        ref = policy.container_ref(request.container)
        return await self.runtime.kill(ref, policy.parse_signal(request.signal))

    async def PauseContainer(self, request: pb.PauseContainerRequest,
                             context: _Ctx) -> pb.Container:
        return await self.runtime.pause(policy.container_ref(request.container))

    async def UnpauseContainer(self, request: pb.UnpauseContainerRequest,
                               context: _Ctx) -> pb.Container:
        return await self.runtime.unpause(policy.container_ref(request.container))

    async def RestartContainer(self, request: pb.RestartContainerRequest,
                               context: _Ctx) -> pb.Container:
        ref, grace = policy.container_ref(request.container), _grace(request)
        with self.limits.hold(_principal(), "RestartContainer"):
            return await self.runtime.restart(ref, grace)

    async def RemoveContainer(self, request: pb.RemoveContainerRequest,
                              context: _Ctx) -> pb.RemoveContainerResponse:
        ref = policy.container_ref(request.container)
        cid = await self.runtime.remove(ref, force=request.force, volumes=request.remove_volumes)
        return pb.RemoveContainerResponse(id=cid)

    async def InspectContainer(self, request: pb.InspectContainerRequest,
                               context: _Ctx) -> pb.Container:
        return await self.runtime.inspect(policy.container_ref(request.container))

    async def ListContainers(self, request: pb.ListContainersRequest,
                             context: _Ctx) -> pb.ListContainersResponse:
        selector = policy.parse_selector(request.label_selector)
        if request.session_id:
            policy.session_id(request.session_id)
        found = await self.runtime.list_containers(selector, request.all, request.session_id)
        return pb.ListContainersResponse(containers=found)

    async def WaitContainer(self, request: pb.WaitContainerRequest,
                            context: _Ctx) -> pb.WaitContainerResponse:
        ref = policy.container_ref(request.container)
        timeout = policy.timeout_seconds(request.timeout_seconds)
        with self.limits.hold(_principal(), "WaitContainer"):
            code, error = await self.runtime.wait(ref, timeout)
        return pb.WaitContainerResponse(exit_code=code, error=error)

    async def Logs(self, request: pb.LogsRequest, context: _Ctx) -> AsyncIterator[pb.LogChunk]:
        ref = policy.container_ref(request.container)
        if request.tail < 0:
            raise InvalidArgument("tail must not be negative", field="tail")
        since = request.since.ToNanoseconds() / 1e9 if request.HasField("since") else 0.0
        with self.limits.hold(_principal(), "Logs(follow)") if request.follow \
                else contextlib.nullcontext():
            stream = self.runtime.logs(ref, follow=request.follow, stdout=request.stdout,
                                       stderr=request.stderr, tail=request.tail, since=since,
                                       timestamps=request.timestamps)
            try:
                async for which, data in stream:
                    yield pb.LogChunk(stream=pb.LogChunk.STREAM_STDERR if which == 2
                                      else pb.LogChunk.STREAM_STDOUT, data=data)
            finally:
                await stream.aclose()

    async def Exec(self, request: pb.ExecRequest, context: _Ctx) -> pb.ExecResponse:
        ref = policy.container_ref(request.container)
        if not request.command:
            raise InvalidArgument("a command is required", field="command")
        policy.check_args(request.command, "command")
        policy.check_env(request.env, "env")
        if request.working_dir:
            policy.absolute_path(request.working_dir, "working_dir")
        if request.user:
            policy.user(request.user, "user")
        timeout = policy.timeout_seconds(request.timeout_seconds)
        with self.limits.hold(_principal(), "Exec"):
            code, out, err = await self.runtime.exec(ref, list(request.command),
                                                     dict(request.env), request.working_dir,
                                                     request.user, timeout)
        return pb.ExecResponse(exit_code=code, stdout=out, stderr=err)

    async def Events(self, request: pb.EventsRequest, context: _Ctx) -> AsyncIterator[pb.Event]:
        selector = policy.parse_selector(request.label_selector)
        if request.session_id:
            policy.session_id(request.session_id)
        stream = self.runtime.events(selector, request.session_id)
        try:
            # Registered: no event from here on is lost once the engine stream is up.
            # Initial metadata tells the client so (``Stream.wait_ready``).
            if context is not None and await self.runtime.events_ready():
                await context.send_initial_metadata(())
            async for event in stream:
                yield event
        finally:
            await stream.aclose()

    # ------------------------------------------------------------ sessions

    async def OpenSession(self, request: pb.OpenSessionRequest, context: _Ctx) -> pb.Session:
        ttl = policy.ttl_seconds(request.ttl_seconds, default=self.sessions.default_ttl)
        policy.session_name(request.name)
        policy.validate_labels(request.labels, "labels", allow_reserved=True)
        rec = self.sessions.open(_principal(), ttl, request.persistent, request.name,
                                 dict(request.labels))
        return await self.sessions.to_pb(rec)

    async def KeepAlive(self, request: pb.KeepAliveRequest, context: _Ctx) -> pb.Session:
        rec = self.sessions.keep_alive(policy.session_id(request.session_id), _caller())
        return await self.sessions.to_pb(rec)

    async def CloseSession(self, request: pb.CloseSessionRequest,
                           context: _Ctx) -> pb.CloseSessionResponse:
        containers, networks, volumes = await self.sessions.close_counts(
            policy.session_id(request.session_id), _caller())
        return pb.CloseSessionResponse(removed_containers=containers, removed_networks=networks,
                                       removed_volumes=volumes)

    async def ListSessions(self, request: pb.ListSessionsRequest,
                           context: _Ctx) -> pb.ListSessionsResponse:
        return pb.ListSessionsResponse(sessions=await self.sessions.list_pb())

    # ------------------------------------------------------------ networks

    async def CreateNetwork(self, request: pb.CreateNetworkRequest, context: _Ctx) -> pb.Network:
        policy.session_id(request.session_id)
        policy.network(request.name, "name", create=True, predefined=False)
        policy.network_driver(request.driver)
        policy.validate_labels(request.labels, "labels")
        return await self.sessions.create_network(request.session_id, _caller(), request.name,
                                                  request.internal, dict(request.labels))

    async def RemoveNetwork(self, request: pb.RemoveNetworkRequest,
                            context: _Ctx) -> pb.RemoveNetworkResponse:
        ref = policy.network(request.network, predefined=False)
        return pb.RemoveNetworkResponse(id=await self.runtime.networks.remove(ref))

    async def InspectNetwork(self, request: pb.InspectNetworkRequest,
                             context: _Ctx) -> pb.Network:
        return await self.runtime.networks.inspect(policy.network(request.network))

    async def ListNetworks(self, request: pb.ListNetworksRequest,
                           context: _Ctx) -> pb.ListNetworksResponse:
        selector = policy.parse_selector(request.label_selector)
        if request.session_id:
            policy.session_id(request.session_id)
        found = await self.runtime.networks.list(selector, request.session_id)
        return pb.ListNetworksResponse(networks=found)

    async def ConnectNetwork(self, request: pb.ConnectNetworkRequest,
                             context: _Ctx) -> pb.Container:
        ref = policy.network(request.network)
        container = policy.container_ref(request.container)
        aliases = policy.network_aliases(request.aliases)
        return await self.runtime.networks.connect(ref, container, aliases)

    async def DisconnectNetwork(self, request: pb.DisconnectNetworkRequest,
                                context: _Ctx) -> pb.Container:
        ref = policy.network(request.network)
        container = policy.container_ref(request.container)
        return await self.runtime.networks.disconnect(ref, container, request.force)

    # ------------------------------------------------------------ faults

    async def InjectFault(self, request: pb.InjectFaultRequest, context: _Ctx) -> pb.Fault:
        policy.session_id(request.session_id)
        return await self.faults.inject(request.session_id, _caller(), request.spec)

    async def ListFaults(self, request: pb.ListFaultsRequest,
                         context: _Ctx) -> pb.ListFaultsResponse:
        if request.session_id:
            policy.session_id(request.session_id)
        return pb.ListFaultsResponse(faults=self.faults.list(request.session_id))

    async def HealFault(self, request: pb.HealFaultRequest, context: _Ctx) -> pb.Fault:
        fid = fault_id(request.fault_id)
        self._check_fault_owner(self.faults.session_of(fid))
        return await self.faults.heal(fid)

    async def UpdateToxics(self, request: pb.UpdateToxicsRequest, context: _Ctx) -> pb.Fault:
        fid = fault_id(request.fault_id)
        self._check_fault_owner(self.faults.session_of(fid))
        return await self.faults.update_toxics(fid, request.toxics)

    def _check_fault_owner(self, session_id: str | None) -> None:
        """A fault is its session's: only the session's principal (or an admin) heals it.
        A session already gone leaves an orphan fault, which any admin may heal."""
        if session_id and not self.sessions.is_ending(session_id):
            self.sessions.get(session_id, _caller())

    async def HealAll(self, request: pb.HealAllRequest, context: _Ctx) -> pb.HealAllResponse:
        if request.session_id and request.all:
            raise InvalidArgument("give a session_id or all, not both", field="all")
        if request.session_id:
            sid = policy.session_id(request.session_id)
            self.sessions.get(sid, _caller())  # an unknown session is an error, not "nothing"
            healed = await self.faults.heal_session(sid)
        elif request.all:
            healed = await self.faults.heal_all()
        else:
            raise InvalidArgument("name a session_id, or set all to heal every fault",
                                  field="session_id")
        return pb.HealAllResponse(healed=healed)
