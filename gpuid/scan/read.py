"""Read a node's GPUs through one pod: run nvidia-smi under one deadline, parse what it printed.

``-L`` runs only when a GPU has MIG enabled, because the XML lacks MIG device
UUIDs on most drivers. One deadline covers both commands; a non-zero exit is
an ``ExecError`` that says whether nvidia-smi was missing (127) or failed.
``read_pod`` adds where to read (``SCAN_SOURCE``): the scanner and
``gpuid snapshot`` both read a node through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gpuid.errors import ExecError, ParseError
from gpuid.kube.objects import PodInfo
from gpuid.kube.podexec import CompletedExec, exec_in_pod
from gpuid.metrics import Metrics
from gpuid.records import SmiReport
from gpuid.scan.settings import ScanSettings
from gpuid.scan.source import IdentitySource
from gpuid.smi.commands import LIST_COMMAND, XML_COMMAND
from gpuid.smi.parse import duplicate_uuids, merge_mig, parse_smi_list, parse_smi_xml


async def _run(
    core_ws: Any,
    pod: PodInfo,
    container: str,
    command: list[str],
    *,
    deadline: float,
    settings: ScanSettings,
    metrics: Metrics,
) -> CompletedExec:
    loop = asyncio.get_running_loop()
    started = loop.time()
    remaining = deadline - started
    if remaining <= 0:
        raise ExecError(f"scan budget of {settings.timeout:g}s used up", timed_out=True)
    try:
        done = await exec_in_pod(
            core_ws,
            namespace=pod.namespace,
            pod=pod.name,
            container=container,
            command=command,
            timeout=remaining,
            max_bytes=settings.max_output_bytes,
        )
    finally:
        metrics.exec_duration.observe(loop.time() - started)
    if done.exit_code != 0:
        what = "nvidia-smi not found in the container" if done.exit_code == 127 else "nvidia-smi failed"
        raise ExecError(
            f"{what} (exit code {done.exit_code}): {done.stderr_excerpt()}",
            exit_code=done.exit_code,
            stderr=done.stderr_excerpt(),
        )
    return done


async def read_gpus(
    core_ws: Any,
    pod: PodInfo,
    container: str,
    settings: ScanSettings,
    metrics: Metrics,
    *,
    on_duplicate: Callable[[PodInfo, str], None] | None = None,
) -> SmiReport:
    """Exec ``nvidia-smi`` in ``pod`` and return the parsed report (MIG devices merged in)."""
    deadline = asyncio.get_running_loop().time() + settings.timeout
    xml = await _run(
        core_ws, pod, container, XML_COMMAND, deadline=deadline, settings=settings, metrics=metrics
    )
    try:
        report = parse_smi_xml(xml.stdout)
    except ParseError as e:
        raise ParseError(f"nvidia-smi output from {pod.source} on {pod.node}: {e}") from e
    if on_duplicate:
        for uuid in duplicate_uuids(report):
            on_duplicate(pod, uuid)
    if report.mig_enabled:
        listing = await _run(
            core_ws, pod, container, LIST_COMMAND, deadline=deadline, settings=settings, metrics=metrics
        )
        report = merge_mig(report, parse_smi_list(listing.stdout.decode("utf-8", "replace")))
    return report


async def read_pod(
    core_ws: Any,
    pod: PodInfo,
    source: IdentitySource,
    settings: ScanSettings,
    metrics: Metrics,
    *,
    on_duplicate: Callable[[PodInfo, str], None] | None = None,
) -> tuple[PodInfo, SmiReport]:
    """The pod that answered for ``pod``'s node and its report: ``pod``, or the driver pod instead."""
    container = source.container_of(pod)
    if container is None:
        raise ExecError("pod has several containers and none is named: set CONTAINER", transient=False)
    try:
        return pod, await read_gpus(core_ws, pod, container, settings, metrics, on_duplicate=on_duplicate)
    except ExecError as e:
        other = await source.fallback(pod, e)
        if other is None:
            raise
    driver, where = other
    return driver, await read_gpus(core_ws, driver, where, settings, metrics, on_duplicate=on_duplicate)
