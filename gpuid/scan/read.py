"""Read a node's GPUs through one pod: run nvidia-smi under one deadline, parse what it printed.

``-L`` runs only when a GPU has MIG enabled, because the XML lacks MIG device
UUIDs on most drivers. One deadline covers both commands; a non-zero exit is
an ``ExecError`` that says whether nvidia-smi was missing (127) or failed.
``read_pod`` adds where to read (``SCAN_SOURCE``): the scanner and
``gpuid snapshot`` both read a node through it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import structlog

from gpuid.errors import ExecError, ParseError
from gpuid.kube.objects import PodInfo
from gpuid.kube.podexec import CompletedExec, exec_in_pod
from gpuid.metrics import Metrics
from gpuid.records import SmiReport
from gpuid.scan.settings import ScanSettings
from gpuid.scan.source import IdentitySource
from gpuid.smi.commands import LIST_COMMAND, XML_COMMAND
from gpuid.smi.parse import duplicate_uuids, merge_mig, parse_smi_list, parse_smi_xml

# Larger replies are parsed in a worker thread: a hostile one at the parser's 4 MiB cap can take
# ~100 ms, and the parser gives the GIL back often enough for the loop to keep running.
INLINE_PARSE_BYTES = 256 * 1024
_FIELD_INDEX = re.compile(r"\[\d+\]")  # mig_devices[3].uuid -> mig_devices.uuid: a bounded label
log = structlog.get_logger("gpuid.scan")


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


def note_report(pod: PodInfo, report: SmiReport, metrics: Metrics) -> None:
    """Count and log what parsing had to work around: text around the XML, GPUs and values left out.

    One line per kind of problem and scan, naming node and pod, so a node whose nvidia-smi
    prints a warning on every run is visible without flooding the logs.
    """
    where = {"node": pod.node, "pod": pod.source}
    if not report.fast_path:
        metrics.smi_fallbacks.inc()
    if report.warnings:
        metrics.smi_warnings.inc(len(report.warnings))
        log.warning("nvidia-smi printed text around its XML", **where, text=list(report.warnings[:3]))
    for gpu in report.skipped:
        metrics.smi_gpus_skipped.labels(gpu.reason).inc()
        log.warning(
            "GPU skipped: no usable UUID",
            **where,
            gpu_index=gpu.index,
            pci_bus_id=gpu.pci_bus_id,
            reason=gpu.reason,
        )
    for value in report.nulled:
        metrics.smi_values_nulled.labels(_FIELD_INDEX.sub("", value.field), value.reason).inc()
    if any(v.reason != "placeholder" for v in report.nulled):
        bad = [
            f"gpu {v.gpu_index}: {v.field} ({v.reason})" for v in report.nulled if v.reason != "placeholder"
        ]
        log.warning("nvidia-smi values unusable, recorded as null", **where, values=bad[:10])
    for uuid in duplicate_uuids(report):
        metrics.duplicate_uuids.inc()
        log.warning("GPU UUID reported twice in one scan; both kept", **where, gpu_uuid=uuid)


async def read_gpus(
    core_ws: Any, pod: PodInfo, container: str, settings: ScanSettings, metrics: Metrics
) -> SmiReport:
    """Exec ``nvidia-smi`` in ``pod`` and return the parsed report (MIG devices merged in)."""
    deadline = asyncio.get_running_loop().time() + settings.timeout
    xml = await _run(
        core_ws, pod, container, XML_COMMAND, deadline=deadline, settings=settings, metrics=metrics
    )
    try:
        if len(xml.stdout) > INLINE_PARSE_BYTES:
            report = await asyncio.to_thread(parse_smi_xml, xml.stdout)
        else:
            report = parse_smi_xml(xml.stdout)
    except ParseError as e:
        raise ParseError(f"nvidia-smi output from {pod.source} on {pod.node}: {e}") from e
    note_report(pod, report, metrics)
    if report.mig_enabled:
        done = await _run(
            core_ws, pod, container, LIST_COMMAND, deadline=deadline, settings=settings, metrics=metrics
        )
        listing = parse_smi_list(done.stdout.decode("utf-8", "replace"))
        if listing.warnings:
            metrics.smi_warnings.inc(len(listing.warnings))
            log.warning(
                "nvidia-smi -L printed lines that are not GPUs or MIG devices",
                node=pod.node,
                pod=pod.source,
                text=list(listing.warnings[:3]),
            )
        report = merge_mig(report, listing)
    return report


async def read_pod(
    core_ws: Any,
    pod: PodInfo,
    source: IdentitySource,
    settings: ScanSettings,
    metrics: Metrics,
) -> tuple[PodInfo, SmiReport]:
    """The pod that answered for ``pod``'s node and its report: ``pod``, or the driver pod instead."""
    container = source.container_of(pod)
    if container is None:
        raise ExecError("pod has several containers and none is named: set CONTAINER", transient=False)
    try:
        return pod, await read_gpus(core_ws, pod, container, settings, metrics)
    except ExecError as e:
        other = await source.fallback(pod, e)
        if other is None:
            raise
    driver, where = other
    return driver, await read_gpus(core_ws, driver, where, settings, metrics)
