"""Collect one ``nvidia-bug-report.log.gz`` from a driver pod, verified, streamed, cleaned up.

Four execs: run the script (under an in-pod ``timeout`` so a hung script is
killed in the container too, not just abandoned), ask the pod for the file's
``sha256sum`` and ``wc -c``, stream it out with ``cat`` into the destinations
while hashing it, and ``rm`` it. The download is accepted only when size and
SHA-256 match what the pod computed; a mismatch, a failure or the deadline
aborts every destination, so nothing partial is ever kept. A report larger
than ``BUG_REPORT_MAX_BYTES`` is refused before its download starts. ``rm`` runs in a
``finally`` with its own short deadline: the pod's ``/tmp`` never fills up
with reports, whatever happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from gpuid.bugreport.settings import BugReportSettings
from gpuid.bugreport.sinks import Destination, ReportWriter
from gpuid.errors import BugReportError, ExecError, GpuidError
from gpuid.kube.objects import PodInfo
from gpuid.kube.podexec import CompletedExec, exec_in_pod, stream_exec
from gpuid.metrics import Metrics
from gpuid.smi.commands import (
    POD_DIR,
    bug_report_command,
    checksum_command,
    cleanup_command,
    download_command,
)

log = structlog.get_logger("gpuid.bugreport")
CLEANUP_TIMEOUT = 30.0
DEFAULT_MAX_BYTES = BugReportSettings.max_bytes
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Target:
    node: str
    pod: PodInfo
    container: str


@dataclass(frozen=True)
class Collected:
    file_name: str  # the .gz as stored
    size: int
    sha256: str
    locations: tuple[str, ...]  # one per destination: a path or s3://bucket/key


def safe_name(text: str, limit: int = 63) -> str:
    """``text`` made safe for a file name and a shell word: ``[A-Za-z0-9._-]``, at most ``limit``."""
    return _UNSAFE.sub("_", text).strip("._")[:limit] or "_"


def report_name(node: str, request_id: str, when: datetime) -> str:
    """``nvidia-bug-report-<node>[-<request-id>]-<YYYYmmdd_HHMMSS>.log`` (the script appends .gz)."""
    request = f"-{safe_name(request_id)}" if request_id else ""
    return f"nvidia-bug-report-{safe_name(node, 253)}{request}-{when:%Y%m%d_%H%M%S}.log"


async def _exec(core_ws: Any, target: Target, command: list[str], timeout: float) -> CompletedExec:
    return await exec_in_pod(
        core_ws,
        namespace=target.pod.namespace,
        pod=target.pod.name,
        container=target.container,
        command=command,
        timeout=timeout,
        max_bytes=1024 * 1024,
    )


async def collect_report(
    core_ws: Any,
    target: Target,
    *,
    name: str,
    timeout: float,
    destinations: Sequence[Destination],
    metrics: Metrics | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Collected:
    """Run the script in ``target`` and deliver the verified report to every destination.

    A report larger than ``max_bytes`` is refused as announced by the pod,
    and the download is cut the moment it grows past what was announced.
    """
    writers: list[ReportWriter] = []
    phase = "nvidia-bug-report.sh"
    try:
        async with asyncio.timeout(timeout):
            await _run_script(core_ws, target, name, timeout)
            phase = "checksum"
            size, sha256 = await _checksum(core_ws, target, name, timeout)
            if size > max_bytes:
                raise BugReportError(
                    f"the report is {size} bytes, over BUG_REPORT_MAX_BYTES ({max_bytes}): not downloaded"
                )
            phase = "store"
            for destination in destinations:  # one by one: those opened are aborted if a later one fails
                writers.append(  # noqa: PERF401
                    await destination.open(target.node, name + ".gz", size=size, sha256=sha256)
                )
            phase = "download"
            await _download(core_ws, target, name, writers, size=size, sha256=sha256, timeout=timeout)
            phase = "store"
            for writer in writers:
                await writer.commit()
    except BaseException as e:  # whatever ends the collection (cancellation too), discard partial copies
        await _abort(writers, target)
        if isinstance(e, TimeoutError) or (isinstance(e, ExecError) and e.timed_out):
            raise BugReportError(f"{phase} did not finish within {timeout:g}s", result="timeout") from None
        if isinstance(e, GpuidError) and not isinstance(e, BugReportError):
            raise BugReportError(f"{phase}: {e}") from e
        raise
    finally:
        if not await remove_from_pod(core_ws, target, name) and metrics is not None:
            metrics.bug_report_errors.labels("cleanup").inc()
    return Collected(name + ".gz", size, sha256, tuple(w.location for w in writers))


async def _run_script(core_ws: Any, target: Target, name: str, timeout: float) -> None:
    done = await _exec(core_ws, target, bug_report_command(name, timeout), timeout)
    if done.exit_code == 0:
        return
    where = f"container {target.container} of {target.pod.source}"
    if done.exit_code == 127:
        raise BugReportError(f"nvidia-bug-report.sh not found in {where}: {done.stderr_excerpt()}")
    if done.exit_code in (124, 137):
        raise BugReportError(f"nvidia-bug-report.sh killed at the deadline in {where}", result="timeout")
    raise BugReportError(f"nvidia-bug-report.sh failed (exit code {done.exit_code}): {done.stderr_excerpt()}")


async def _checksum(core_ws: Any, target: Target, name: str, timeout: float) -> tuple[int, str]:
    done = await _exec(core_ws, target, checksum_command(name), timeout)
    if done.exit_code != 0:
        raise BugReportError(f"the report {POD_DIR}/{name}.gz was not written: {done.stderr_excerpt()}")
    lines = done.stdout.decode("utf-8", "replace").split("\n")
    try:
        sha256, size = lines[0].split()[0].lower(), int(lines[1].split()[0])
    except (IndexError, ValueError):
        sha256, size = "", -1
    if not _SHA256.match(sha256) or size < 0:
        raise BugReportError(f"unexpected sha256sum/wc output: {done.stdout[:200]!r}")
    return size, sha256


async def _download(
    core_ws: Any,
    target: Target,
    name: str,
    writers: Sequence[ReportWriter],
    *,
    size: int,
    sha256: str,
    timeout: float,
) -> None:
    digest = hashlib.sha256()
    received = 0

    async def sink(chunk: memoryview) -> None:
        nonlocal received
        received += len(chunk)
        if received > size:  # size was checked against BUG_REPORT_MAX_BYTES: this caps the stream too
            raise BugReportError(f"download larger than the {size} bytes the pod reported")
        digest.update(chunk)
        for writer in writers:
            await writer.write(chunk)

    done = await stream_exec(
        core_ws,
        namespace=target.pod.namespace,
        pod=target.pod.name,
        container=target.container,
        command=download_command(name),
        sink=sink,
        timeout=timeout,
    )
    if done.exit_code != 0:
        raise BugReportError(f"cat {name}.gz failed (exit code {done.exit_code}): {done.stderr_excerpt()}")
    if received != size:
        raise BugReportError(f"download incomplete: {received} of {size} bytes")
    if digest.hexdigest() != sha256:
        raise BugReportError(f"sha256 mismatch: pod says {sha256}, received {digest.hexdigest()}")


async def _abort(writers: Sequence[ReportWriter], target: Target) -> None:
    for writer in writers:
        try:
            await writer.abort()
        except GpuidError as e:
            log.warning("could not discard a partial bug report", node=target.node, error=str(e))


async def remove_from_pod(core_ws: Any, target: Target, name: str) -> bool:
    """``rm -f`` the report in the pod; a failure is logged, never raised (the collection decided)."""
    try:
        done = await _exec(core_ws, target, cleanup_command(name), CLEANUP_TIMEOUT)
    except ExecError as e:
        error = str(e)
    else:
        if done.exit_code == 0:
            return True
        error = f"rm exit code {done.exit_code}: {done.stderr_excerpt()}"
    log.warning(
        "could not remove the bug report from the pod", node=target.node, pod=target.pod.source, error=error
    )
    return False
