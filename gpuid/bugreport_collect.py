"""Collect one ``nvidia-bug-report.log.gz`` from a driver pod, verified, streamed, cleaned up.

Four execs: run the script (under an in-pod ``timeout`` so a hung script is
killed in the container too, not just abandoned), ask the pod for the file's
``sha256sum`` and ``wc -c``, stream it out with ``cat`` into the destinations
while hashing it, and ``rm`` it. The download is accepted only when size and
SHA-256 match what the pod computed; a mismatch, a failure or the deadline
aborts every destination, so nothing partial is ever kept. ``rm`` runs in a
``finally`` with its own short deadline: the pod's ``/tmp`` never fills up
with reports, whatever happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from gpuid.bugreport_sinks import Destination, ReportWriter
from gpuid.cluster import PodInfo
from gpuid.errors import ExecError, GpuidError
from gpuid.metrics import Metrics
from gpuid.podexec import CompletedExec, exec_in_pod, stream_exec
from gpuid.smiread import SMI_PATH

log = structlog.get_logger("gpuid.bugreport")
CLEANUP_TIMEOUT = 30.0
POD_DIR = "/tmp"  # noqa: S108 - a directory inside the driver container, where the script writes
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BugReportError(GpuidError):
    """A collection failed; ``result`` is its metric label (``failed`` or ``timeout``)."""

    def __init__(self, message: str, *, result: str = "failed") -> None:
        super().__init__(message)
        self.result = result


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


def script_command(output: str, timeout: float) -> list[str]:
    limit = max(1, math.ceil(timeout))
    script = (
        f'PATH="$PATH:{SMI_PATH}" exec timeout -s KILL {limit} '
        f"nvidia-bug-report.sh --output-file {shlex.quote(output)} >/dev/null"
    )
    return ["sh", "-c", script]


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
) -> Collected:
    """Run the script in ``target`` and deliver the verified report to every destination."""
    output, report = f"{POD_DIR}/{name}", f"{POD_DIR}/{name}.gz"
    writers: list[ReportWriter] = []
    phase = "nvidia-bug-report.sh"
    try:
        async with asyncio.timeout(timeout):
            await _run_script(core_ws, target, output, timeout)
            phase = "checksum"
            size, sha256 = await _checksum(core_ws, target, report, timeout)
            for destination in destinations:  # one by one: those opened are aborted if a later one fails
                writers.append(  # noqa: PERF401
                    await destination.open(target.node, name + ".gz", size=size, sha256=sha256)
                )
            phase = "download"
            await _download(core_ws, target, report, writers, size=size, sha256=sha256, timeout=timeout)
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
        if not await remove_from_pod(core_ws, target, [output, report]) and metrics is not None:
            metrics.bug_report_errors.labels("cleanup").inc()
    return Collected(name + ".gz", size, sha256, tuple(w.location for w in writers))


async def _run_script(core_ws: Any, target: Target, output: str, timeout: float) -> None:
    done = await _exec(core_ws, target, script_command(output, timeout), timeout)
    if done.exit_code == 0:
        return
    where = f"container {target.container} of {target.pod.source}"
    if done.exit_code == 127:
        raise BugReportError(f"nvidia-bug-report.sh not found in {where}: {done.stderr_excerpt()}")
    if done.exit_code in (124, 137):
        raise BugReportError(f"nvidia-bug-report.sh killed at the deadline in {where}", result="timeout")
    raise BugReportError(f"nvidia-bug-report.sh failed (exit code {done.exit_code}): {done.stderr_excerpt()}")


async def _checksum(core_ws: Any, target: Target, report: str, timeout: float) -> tuple[int, str]:
    path = shlex.quote(report)
    done = await _exec(core_ws, target, ["sh", "-c", f"sha256sum {path} && wc -c {path}"], timeout)
    if done.exit_code != 0:
        raise BugReportError(f"the report {report} was not written: {done.stderr_excerpt()}")
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
    report: str,
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
        if received > size:
            raise BugReportError(f"download larger than the {size} bytes the pod reported")
        digest.update(chunk)
        for writer in writers:
            await writer.write(chunk)

    done = await stream_exec(
        core_ws,
        namespace=target.pod.namespace,
        pod=target.pod.name,
        container=target.container,
        command=["cat", report],
        sink=sink,
        timeout=timeout,
    )
    if done.exit_code != 0:
        raise BugReportError(f"cat {report} failed (exit code {done.exit_code}): {done.stderr_excerpt()}")
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


async def remove_from_pod(core_ws: Any, target: Target, paths: list[str]) -> bool:
    """``rm -f`` the report in the pod; a failure is logged, never raised (the collection decided)."""
    try:
        done = await _exec(core_ws, target, ["rm", "-f", *paths], CLEANUP_TIMEOUT)
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
