"""RPC throughput: signed mTLS ``GetNodeInfo`` on the agent versus plaintext gRPC.

Both servers are separate grpc.aio subprocesses on loopback:

* signed: the real ``shakedown-agent`` (mutual TLS, the Guard interceptor,
  HMAC scheme v2 verification, the persisted nonce window, the real servicer);
* plain:  this script re-run with ``--serve-plain``: a bare grpc.aio server
  implementing the same ``shakedown.agent.v1.Agent/GetNodeInfo`` and answering
  with the agent's own NodeInfo (same size), no TLS, no interceptor.

The client side is the same for both: ``--threads`` threads issuing blocking
unary calls on ONE channel, with the request already serialized and signed as
the driver does (``RequestSigner``: HMAC v2 metadata passed to the call; until
the v2 change the driver, and this row, went through ``grpc.intercept_channel``
+ ``SigningInterceptor``, ~60-100 us more client CPU per call). Runs are
interleaved in rounds, each bounded by a duration and a call cap. Two
informational rows help to split the cost: ``mtls+headers`` is the plain server
behind the same mutual TLS as the agent, sent the same five signature headers
(which it ignores): the transport's share, without the agent's Python (guard,
HMAC check, servicer); and ``AgentClient`` is the public ``client.node_info()`` (adds the
dataclass conversion and the retry wrapper).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from common import (
    Metric,
    Report,
    Summary,
    log,
    ms,
    new_run_id,
    parser,
    ratio,
    running_agent,
    workdir,
)

from driver.control.process import wait_for  # importable once `common` set sys.path

SERVICE = "shakedown.agent.v1.Agent"
METHOD = f"/{SERVICE}/GetNodeInfo"
MAX_CALLS_PER_RUN = 100_000


# ------------------------------------------------------------------ plain baseline server


def serve_plain(port_file: Path, payload_file: Path, certs: Path | None = None) -> None:
    """The baseline: grpc.aio, insecure, no interceptor, one real method.

    With ``certs`` (a ``certs init`` dir) the same server requires mutual TLS,
    as the agent does: the ``mtls+headers`` row, which splits the transport from the rest.
    """
    import asyncio

    import grpc

    from shakedown.agent.v1 import agent_pb2 as pb

    template = pb.NodeInfo.FromString(payload_file.read_bytes())

    async def get_node_info(request: Any, context: Any) -> Any:
        info = pb.NodeInfo()
        info.CopyFrom(template)
        info.server_time.GetCurrentTime()
        return info

    # What add_AgentServicer_to_server registers for this method, minus the other 17.
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "GetNodeInfo": grpc.unary_unary_rpc_method_handler(
            get_node_info, request_deserializer=pb.GetNodeInfoRequest.FromString,
            response_serializer=pb.NodeInfo.SerializeToString),
    })

    async def run() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        if certs is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            name = sorted(certs.glob("agent-*.crt"))[0].stem
            creds = grpc.ssl_server_credentials(
                [((certs / f"{name}.key").read_bytes(), (certs / f"{name}.crt").read_bytes())],
                root_certificates=(certs / "ca.crt").read_bytes(), require_client_auth=True)
            port = server.add_secure_port("127.0.0.1:0", creds)
        await server.start()
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(port_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(1)

    asyncio.run(run())


class PlainServer:
    def __init__(self, root: Path, payload: bytes, certs: Path | None = None) -> None:
        tag = "plain" if certs is None else "mtls-plain"
        self.port_file = root / f"{tag}.port"
        self.payload_file = root / f"{tag}-nodeinfo.bin"
        self.payload_file.write_bytes(payload)
        self.log_path = root / f"{tag}.log"
        self.certs = certs
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> PlainServer:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--serve-plain", str(self.port_file),
                 str(self.payload_file), *([str(self.certs)] if self.certs else [])],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError("plain server exited:\n" + self.log_path.read_text()[-2000:])
            return self.port_file.exists() and self.port_file.read_text().strip().isdigit()

        wait_for(ready, 20, what="the plain baseline server to listen")
        self.port = int(self.port_file.read_text())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)  # by PID: Popen knows only its own child
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ------------------------------------------------------------------ load generator


def load(call: Callable[[], object], threads: int, duration: float,
         max_calls: int) -> tuple[list[float], float, int]:
    """Run ``call`` from ``threads`` threads until ``duration`` or ``max_calls``.

    Returns (latencies in seconds, wall time, errors).
    """
    lock = threading.Lock()
    issued = 0
    errors = 0
    per_thread: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    deadline = 0.0

    def worker(out: list[float]) -> None:
        nonlocal issued, errors
        barrier.wait()
        while True:
            with lock:
                if issued >= max_calls:
                    return
                issued += 1
            t0 = time.perf_counter()
            try:
                call()
            except Exception:
                with lock:
                    errors += 1
                if errors > 100:
                    return
                continue
            t1 = time.perf_counter()
            out.append(t1 - t0)
            if t1 >= deadline:
                return

    workers = [threading.Thread(target=worker, args=(per_thread[i],), daemon=True)
               for i in range(threads)]
    for w in workers:
        w.start()
    start = time.perf_counter()
    deadline = start + duration
    barrier.wait()
    for w in workers:
        w.join(duration + 60)
    wall = time.perf_counter() - start
    return [x for lst in per_thread for x in lst], wall, errors


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) in (4, 5) and sys.argv[1] == "--serve-plain":
        serve_plain(Path(sys.argv[2]), Path(sys.argv[3]),
                    Path(sys.argv[4]) if len(sys.argv) == 5 else None)
        return 0
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=4, help="client threads on one channel (4)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3; --quick 1)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per side per round (4; --quick 0.5; capped at 30)")
    args = p.parse_args(argv)
    rounds = min(args.rounds or (1 if args.quick else 3), 20)
    duration = min(args.duration or (0.5 if args.quick else 4.0), 30.0)
    threads = max(1, min(args.threads, 64))

    import grpc

    from driver.signer import RequestSigner
    from shakedown import keyring, signing
    from shakedown.agent.v1 import agent_pb2 as pb

    run_id = new_run_id()
    report = Report("rpc", run_id, args.quick)
    body = pb.GetNodeInfoRequest().SerializeToString()
    log(f"rpc: run {run_id}, {threads} threads, {rounds} round(s) x {duration}s per side")

    with workdir(run_id) as root, running_agent(run_id, root) as agent:
        pki = agent.pki.dir
        key = keyring.load(agent.keys).signing_key("driver")
        creds = grpc.ssl_channel_credentials(
            root_certificates=pki.ca_cert.read_bytes(),
            private_key=pki.client_key("driver").read_bytes(),
            certificate_chain=pki.client_cert("driver").read_bytes())
        tls_channel = grpc.secure_channel(agent.address, creds)
        # The driver's path (AgentClient): sign the serialized bytes, pass the metadata.
        signer = RequestSigner(key.id, key.secret, audience=agent.name)
        signed_raw = tls_channel.unary_unary(METHOD, request_serializer=None,
                                             response_deserializer=None)
        signed_call = tls_channel.unary_unary(METHOD, request_serializer=None,
                                              response_deserializer=pb.NodeInfo.FromString)
        payload: bytes = signed_raw(body, timeout=10, metadata=signer.metadata(METHOD, body))
        client = agent.client()
        with PlainServer(root, payload) as plain_server, \
                PlainServer(root, payload, certs=pki.root) as mtls_server:
            plain_channel = grpc.insecure_channel(f"127.0.0.1:{plain_server.port}")
            plain = plain_channel.unary_unary(METHOD, request_serializer=None,
                                              response_deserializer=pb.NodeInfo.FromString)
            plain(body, timeout=10)
            mtls_channel = grpc.secure_channel(f"127.0.0.1:{mtls_server.port}", creds)
            mtls = mtls_channel.unary_unary(METHOD, request_serializer=None,
                                            response_deserializer=pb.NodeInfo.FromString)
            mtls(body, timeout=10)
            try:
                calls: dict[str, Callable[[], object]] = {
                    "plain": lambda: plain(body, timeout=10),
                    "signed": lambda: signed_call(
                        body, timeout=10, metadata=signer.metadata(METHOD, body)),
                    "mtls+headers": lambda: mtls(
                        body, timeout=10, metadata=signer.metadata(METHOD, body)),
                    "AgentClient": lambda: client.node_info(timeout=10),
                }
                warm = 50 if args.quick else 300
                for call in calls.values():  # warm-up: connections, code paths, caches
                    load(call, threads, 5.0, warm)
                assert agent.proc is not None and plain_server.proc is not None
                assert mtls_server.proc is not None
                server_proc = {
                    "plain": psutil.Process(plain_server.proc.pid),
                    "mtls+headers": psutil.Process(mtls_server.proc.pid),
                    "signed": psutil.Process(agent.proc.pid),
                    "AgentClient": psutil.Process(agent.proc.pid),
                }
                cpu: dict[str, list[float]] = {k: [0.0, 0.0] for k in calls}  # server, client
                lat: dict[str, list[float]] = {k: [] for k in calls}
                wall: dict[str, float] = dict.fromkeys(calls, 0.0)
                errs: dict[str, int] = dict.fromkeys(calls, 0)
                order = list(calls)
                for r in range(rounds):
                    this: dict[str, float] = {}
                    for side in order if r % 2 == 0 else reversed(order):
                        s0, c0 = _cpu(server_proc[side]), time.process_time()
                        xs, w, e = load(calls[side], threads, duration, MAX_CALLS_PER_RUN)
                        cpu[side][0] += _cpu(server_proc[side]) - s0
                        cpu[side][1] += time.process_time() - c0
                        lat[side] += xs
                        wall[side] += w
                        errs[side] += e
                        this[side] = len(xs) / w if w else 0.0
                    log(f"  round {r + 1}/{rounds}: "
                        + ", ".join(f"{s} {this[s]:.0f}/s" for s in order))
            finally:
                plain_channel.close()
                mtls_channel.close()
                tls_channel.close()
                client.close()

    # In-process cost of the signature itself, client side (no I/O).
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        signing.sign(key.id, key.secret, METHOD, body, audience=agent.name)
    sign_us = (time.perf_counter() - t0) / n * 1e6

    _fill(report, lat, wall, errs, cpu, threads, sign_us, len(payload))
    report.emit(args.json)
    return 0


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _fill(report: Report, lat: dict[str, list[float]], wall: dict[str, float],
          errs: dict[str, int], cpu: dict[str, list[float]], threads: int, sign_us: float,
          payload_len: int) -> None:
    tput = {s: (len(v) / wall[s] if wall[s] else 0.0) for s, v in lat.items()}
    summ = {s: Summary.of(v) for s, v in lat.items()}
    # CPU seconds per call, in microseconds: robust against other load on the host.
    cpu_us = {s: [c / len(lat[s]) * 1e6 if lat[s] else 0.0 for c in cpu[s]] for s in lat}
    rows = [[s, str(summ[s].n), f"{tput[s]:.0f}", f"{ratio(tput[s], tput['plain']):.3f}x",
             ms(summ[s].p50), ms(summ[s].p99), ms(summ[s].mean), f"{cpu_us[s][0]:.0f}",
             f"{cpu_us[s][1]:.0f}", str(errs[s])] for s in lat]
    report.tables.append((f"GetNodeInfo, {threads} threads on one channel "
                          f"(response {payload_len} bytes)",
                          ["side", "calls", "calls/s", "vs plain", "p50 ms", "p99 ms", "mean ms",
                           "server CPU us/call", "client CPU us/call", "errors"], rows))
    r = ratio(tput["signed"], tput["plain"])
    report.metrics += [
        Metric("rpc signed/plain throughput", r, "x", ">=", 0.70),
        Metric("rpc signed calls/s", tput["signed"], "/s"),
        Metric("rpc plain calls/s", tput["plain"], "/s"),
        Metric("rpc signed p99 latency", summ["signed"].p99 * 1000, "ms"),
        Metric("rpc server CPU/call signed/plain", ratio(cpu_us["signed"][0], cpu_us["plain"][0]),
               "x"),
    ]
    report.details = {
        "threads": threads,
        "response_bytes": payload_len,
        "calls_per_s": tput,
        "latency_ms": {s: v.scaled(1000) for s, v in summ.items()},
        "errors": errs,
        "cpu_us_per_call": {s: {"server": v[0], "client": v[1]} for s, v in cpu_us.items()},
        "client_sign_cost_us": sign_us,
        "per_call_overhead_ms": (1 / tput["signed"] - 1 / tput["plain"]) * 1000 * threads
        if tput["signed"] and tput["plain"] else None,
    }
    report.notes.append(f"signing one request costs {sign_us:.1f} us on the client (in-process)")
    if any(errs.values()):
        report.notes.append(f"errors during the runs: {errs}")


if __name__ == "__main__":
    sys.exit(main())
