"""Stream a command's stdout out of a pod, chunk by chunk, without holding it in memory.

``gpuid.podexec.exec_in_pod`` collects the whole output, which is right for
``nvidia-smi`` (kilobytes, capped) and wrong for a 50 MB bug report. Here
each stdout frame is handed to an async ``sink`` as it arrives; the sink's
own pace is the flow control (aiohttp stops reading the socket while frames
wait, and the API server in turn stops sending). Same protocol rules as
``podexec``: binary ``v4.channel.k8s.io`` frames, 1-byte "ready" frames
skipped, the exit code from the channel-3 Status, and one hard deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from gpuid.errors import ExecError
from gpuid.podexec import STATUS, STDERR, STDERR_CAP, STDOUT, CompletedExec, exit_code_from_status

Sink = Callable[[bytes], Awaitable[None]]


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
    """Run ``command``, pass every stdout chunk to ``sink``; stdout of the result stays empty.

    The deadline covers the sink too: a download that stalls (server or sink)
    ends with ``ExecError(timed_out=True)`` and the stream is closed.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _stream(core_ws, (namespace, pod, container), command, sink)
    except TimeoutError:
        raise ExecError(f"exec did not finish within {timeout:g}s", timed_out=True) from None
    except aiohttp.WSServerHandshakeError as e:
        raise ExecError(f"exec refused by the API server: HTTP {e.status} {e.message}") from e
    except (aiohttp.ClientError, OSError) as e:
        raise ExecError(f"exec transport error: {type(e).__name__}: {e}") from e


async def _stream(
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
                await sink(data[1:])
            elif channel == STDERR:
                if len(stderr) < STDERR_CAP:
                    stderr += data[1 : 1 + STDERR_CAP - len(stderr)]
            elif channel == STATUS:
                status = data[1:]
    if status is None:
        raise ExecError("exec stream closed without a status (connection lost?)")
    return CompletedExec(b"", bytes(stderr), exit_code_from_status(status))
