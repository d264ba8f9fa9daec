"""Run a command in a pod over the WebSocket exec protocol and return its result as data.

kubernetes_asyncio's preload mode merges stdout and stderr and drops the exit
code, so gpuid reads the ``v4.channel.k8s.io`` frames itself: channel 1 is
stdout, 2 stderr, 3 the final Status that carries the exit code. Frames of one
byte or less are the kubelet's "ready" signal. Every exec has a hard deadline
and an output cap, because ``nvidia-smi`` has no timeout of its own. An
upgrade the API server refuses with 429 (load shedding) is asked again after
its ``Retry-After``, inside the same deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio.stream import WsApiClient

from gpuid.errors import ExecError
from gpuid.kube.api import pause, retry_after

STDOUT, STDERR, STATUS = 1, 2, 3
STDERR_CAP = 64 * 1024


@dataclass(frozen=True, slots=True)
class CompletedExec:
    stdout: bytes
    stderr: bytes
    exit_code: int

    def stderr_excerpt(self, limit: int = 300) -> str:
        text = self.stderr.decode("utf-8", "replace").strip()
        return text if len(text) <= limit else text[:limit] + "..."


def exit_code_from_status(raw: bytes) -> int:
    """The exit code in a channel-3 Status; ``ExecError`` when it names none."""
    try:
        return int(WsApiClient.parse_error_data(raw))
    except (ValueError, KeyError, IndexError, TypeError) as e:
        try:
            message = str(json.loads(raw).get("message", ""))[:300]
        except (ValueError, AttributeError):
            message = raw[:300].decode("utf-8", "replace")
        raise ExecError(f"exec failed: {message or 'unreadable status'}") from e


Sink = Callable[[memoryview], Awaitable[None]]


async def exec_in_pod(
    core_ws: Any,
    *,
    namespace: str,
    pod: str,
    container: str,
    command: list[str],
    timeout: float,
    max_bytes: int,
) -> CompletedExec:
    """Run ``command`` in ``namespace/pod`` and collect stdout (at most ``max_bytes``), stderr, exit code."""
    chunks: list[memoryview] = []  # views of the frames, not copies: the join below is the only copy
    size = 0

    async def collect(chunk: memoryview) -> None:
        nonlocal size
        size += len(chunk)
        if size > max_bytes:
            raise ExecError(f"output exceeded {max_bytes} bytes", transient=False)
        chunks.append(chunk)

    done = await stream_exec(
        core_ws,
        namespace=namespace,
        pod=pod,
        container=container,
        command=command,
        sink=collect,
        timeout=timeout,
    )
    return CompletedExec(b"".join(chunks), done.stderr, done.exit_code)


async def stream_exec(
    core_ws: Any,
    *,
    namespace: str,
    pod: str,
    container: str,
    command: list[str],
    sink: Sink,
    timeout: float,
) -> CompletedExec:
    """Run ``command`` and hand every stdout chunk to ``sink`` as it arrives (``stdout`` stays empty).

    A 50 MB bug report streams through here without being held in memory: the
    sink's pace is the flow control (aiohttp stops reading the socket while it
    waits, and the API server stops sending). The deadline covers the sink too.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _throttled(core_ws, (namespace, pod, container), command, sink, timeout)
    except TimeoutError:
        raise ExecError(f"exec did not finish within {timeout:g}s", timed_out=True) from None
    except aiohttp.WSServerHandshakeError as e:
        raise ExecError(f"exec refused by the API server: HTTP {e.status} {e.message}") from e
    except (aiohttp.ClientError, OSError) as e:
        raise ExecError(f"exec transport error: {type(e).__name__}: {e}") from e


async def _throttled(
    core_ws: Any,
    target: tuple[str, str, str],
    command: list[str],
    sink: Sink,
    timeout: float,
) -> CompletedExec:
    """``_frames(...)``, asked again after each ``Retry-After`` the API server answers the upgrade with.

    A 429 on the handshake is load shedding: the command never started, so
    waiting and asking again is safe. A wait that would not fit in the
    deadline becomes an ``ExecError`` carrying ``retry_after`` for the caller.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await _frames(core_ws, target, command, sink)
        except aiohttp.WSServerHandshakeError as e:
            advice = retry_after(e.status, e.headers)
            if advice is None:
                raise
            wait = pause(advice)
            if loop.time() + wait >= deadline:
                raise ExecError(
                    f"exec throttled by the API server: HTTP {e.status}, retry after {advice:g}s",
                    retry_after=advice,
                ) from e
            await asyncio.sleep(wait)


async def _frames(
    core_ws: Any, target: tuple[str, str, str], command: list[str], sink: Sink
) -> CompletedExec:
    namespace, pod, container = target
    stderr = bytearray()
    status: bytes | None = None
    ctx = await core_ws.connect_get_namespaced_pod_exec(
        pod,
        namespace,
        command=command,
        container=container,
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    async with ctx as ws:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                if msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                    break
                continue
            data: bytes = msg.data
            if len(data) <= 1:
                continue
            channel = data[0]
            if channel == STDOUT:
                await sink(memoryview(data)[1:])
            elif channel == STDERR:
                if len(stderr) < STDERR_CAP:
                    stderr += data[1 : 1 + STDERR_CAP - len(stderr)]
            elif channel == STATUS:
                status = data[1:]
    if status is None:
        raise ExecError("exec stream closed without a status (connection lost?)")
    return CompletedExec(b"", bytes(stderr), exit_code_from_status(status))
