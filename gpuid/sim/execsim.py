"""Pod exec over WebSocket, speaking the kubelet's ``v4.channel.k8s.io``.

Exec is where gpuid gets its data and where real clusters fail in the most
ways, so the sim follows the protocol closely: checks that fail before the
upgrade (missing pod, unknown container, pod not running) are plain HTTP
Status errors, which aiohttp's client raises as ``WSServerHandshakeError``;
after the upgrade every frame is binary with the channel in its first byte
(1-byte "ready" frames on stdout and stderr, then stdout and stderr data in
≤ 32 KiB frames, then the channel-3 Status that carries the exit code), and
the server closes. Per-pod misbehaviour (delay, hang, exit code, missing
nvidia-smi) comes from the cluster's fault switches. Deleting the pod stops
its containers, so a command still running ends with exit code 137. A
client that leaves mid-stream is normal and is not logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import MutableSet, Sequence

from aiohttp import WSCloseCode, web

from gpuid.sim import wire
from gpuid.sim.cluster import SimCluster
from gpuid.sim.faults import ExecBehaviour
from gpuid.sim.shell import ShellResult, run_command

EXEC_PROTOCOL = "v4.channel.k8s.io"
CHUNK_BYTES = 32 * 1024
STDOUT, STDERR, STATUS = 1, 2, 3
KILLED = 137  # exit code of a command killed with its container (SIGKILL)


def _precheck(request: web.Request, cluster: SimCluster) -> web.Response | tuple[str, Sequence[str]]:
    """The checks the API server and kubelet make before upgrading: an error, or (node, argv)."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    current = cluster.current("pods", namespace, name)
    if current is None:
        return wire.not_found("pods", name)
    pod = current.obj
    containers = [c["name"] for c in pod["spec"]["containers"]]
    container = request.query.get("container") or (containers[0] if len(containers) == 1 else "")
    if not container:
        choices = " ".join(containers)
        return wire.status_response(
            400, f"a container name must be specified for pod {name}, choose one of: [{choices}]"
        )
    if container not in containers:
        return wire.status_response(400, f"container {container} is not valid for pod {name}")
    if pod["status"].get("phase") != "Running":
        return wire.status_response(400, f'unable to upgrade connection: container not found ("{container}")')
    argv = request.query.getall("command", [])
    if not argv:
        return wire.status_response(400, "you must specify at least 1 command")
    offered = {p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")}
    if EXEC_PROTOCOL not in offered:
        return wire.status_response(400, f"unable to upgrade connection: the sim speaks only {EXEC_PROTOCOL}")
    if not web.WebSocketResponse(protocols=(EXEC_PROTOCOL,)).can_prepare(request).ok:
        return wire.status_response(400, "Upgrade request required")
    return pod["spec"]["nodeName"], argv


async def handle_exec(
    request: web.Request, cluster: SimCluster, sockets: MutableSet[web.WebSocketResponse]
) -> web.StreamResponse:
    checked = _precheck(request, cluster)
    if isinstance(checked, web.Response):
        return checked
    node, argv = checked
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    behaviour = cluster.exec_behaviour(namespace, name)
    result = run_command(
        argv,
        cluster.capture_for_node(node),
        missing_smi=behaviour.missing_smi,
        programs=cluster.pod_files.programs(namespace, name),
    )
    ws = web.WebSocketResponse(protocols=(EXEC_PROTOCOL,), compress=False, timeout=2.0)
    await ws.prepare(request)
    sockets.add(ws)
    uid = cluster.pod(name, namespace)["metadata"]["uid"]
    conversation = asyncio.create_task(_converse(ws, argv, result, behaviour), name="sim-exec")
    deletion = asyncio.create_task(_until_deleted(cluster, namespace, name, uid), name="sim-exec-pod")
    try:
        await asyncio.wait([conversation, deletion], return_when=asyncio.FIRST_COMPLETED)
        if not conversation.done():  # the pod was deleted: its containers stop, the command is killed
            conversation.cancel()
            await asyncio.wait([conversation])
            if not ws.closed:
                await ws.send_bytes(bytes([STATUS]) + wire.exec_status(argv, KILLED))
        else:
            conversation.result()  # re-raises what ended it (ConnectionError: handled below)
    except ConnectionError:
        pass  # the client left mid-stream, which clients are allowed to do
    finally:
        for task in (conversation, deletion):
            task.cancel()
        await asyncio.wait([conversation, deletion])
        sockets.discard(ws)
    return ws


async def _until_deleted(cluster: SimCluster, namespace: str, name: str, uid: str) -> None:
    """Return once pod ``namespace/name`` with ``uid`` no longer exists."""
    while (current := cluster.current("pods", namespace, name)) is not None:
        if current.obj["metadata"]["uid"] != uid:
            return
        changed = cluster.log.changed()
        try:
            await changed
        finally:
            cluster.log.forget(changed)


async def _until_client_leaves(ws: web.WebSocketResponse) -> None:
    """Consume (and ignore) stdin/resize frames until the connection closes."""
    async for _ in ws:
        pass


async def _send(ws: web.WebSocketResponse, channel: int, data: bytes) -> None:
    prefix = bytes([channel])
    for start in range(0, len(data), CHUNK_BYTES):
        await ws.send_bytes(prefix + data[start : start + CHUNK_BYTES])


async def _send_file(ws: web.WebSocketResponse, path: str, limit: int | None) -> None:
    """Stream a host file as stdout a chunk at a time (``send_bytes`` waits while the client is slow)."""
    left = math.inf if limit is None else limit
    with open(path, "rb") as f:  # noqa: ASYNC230 - local 32 KiB reads; the sim stays simple
        while left > 0 and (chunk := f.read(int(min(CHUNK_BYTES, left)))):
            left -= len(chunk)
            await ws.send_bytes(bytes([STDOUT]) + chunk)


async def _converse(
    ws: web.WebSocketResponse, argv: Sequence[str], result: ShellResult, behaviour: ExecBehaviour
) -> None:
    await ws.send_bytes(bytes([STDOUT]))  # "ready" frames: clients skip frames of <= 1 byte
    await ws.send_bytes(bytes([STDERR]))
    if behaviour.hang:
        await _until_client_leaves(ws)
        return
    if behaviour.delay > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(behaviour.delay):
                await _until_client_leaves(ws)
        if ws.closed:
            return
    if result.start_error is not None:
        await ws.send_bytes(bytes([STATUS]) + wire.exec_internal_error(result.start_error))
    else:
        stdout = result.stdout if behaviour.stdout is None else behaviour.stdout
        exit_code = behaviour.exit_code or result.exit_code
        await _send(ws, STDOUT, stdout)
        if result.stream_file is not None and behaviour.stdout is None:
            await _send_file(ws, result.stream_file, result.stream_limit)
        await _send(ws, STDERR, result.stderr + behaviour.stderr)
        if result.runtime > 0:  # the program is still running: its status comes later, or never
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if math.isinf(result.runtime) else result.runtime):
                    await _until_client_leaves(ws)
            if ws.closed:
                return
        await ws.send_bytes(bytes([STATUS]) + wire.exec_status(argv, exit_code))
    await ws.close(code=WSCloseCode.OK)
