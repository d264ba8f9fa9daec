"""``gpuid snapshot``: what is in this cluster right now, in one command, without a database.

Lists the pods gpuid would watch, reads every ready one once — with the same
settings, the same deadlines, the same ``SCAN_SOURCE`` and the same parser
as the service (``gpuid.scan.read.read_pod``) — and prints one record per
GPU: JSON lines when stdout is not a terminal, a table on a terminal, or
``--output json|table|csv``. On a terminal, progress goes to stderr; a
summary (nodes, GPUs, failures by reason, each failed pod named) always does.
The exit code is 1 when any pod could not be read. No HTTP server, no
leader election; ``--export`` also hands the records to the configured
exporters (off by default: a snapshot is a question, not an inventory run).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from gpuid.config import Settings
from gpuid.delivery.delivery import Delivery
from gpuid.errors import ExecError, GpuidError, ParseError
from gpuid.exporters import build_exporters
from gpuid.exporters.s3 import encode_csv
from gpuid.kube.client import KubeClients, connect
from gpuid.kube.informer import Informer
from gpuid.kube.nodes import NodeDirectory
from gpuid.kube.objects import PodInfo, slim_pod
from gpuid.metrics import Metrics
from gpuid.records import GPUReading, readings_from_report
from gpuid.scan.read import read_pod
from gpuid.scan.source import DriverPods, IdentitySource

OUTPUTS = ("json", "table", "csv")
LIST_DEADLINE = 60.0  # seconds to list pods (and nodes); the API server must answer by then
TABLE = (
    ("NODE", "node"),
    ("GPU", "gpu_index"),
    ("UUID", "gpu_uuid"),
    ("SERIAL", "gpu_serial"),
    ("CHASSIS", "chassis_serial"),
    ("MODULE", "module_id"),
    ("PCI", "pci_bus_id"),
    ("PRODUCT", "product_name"),
)


@dataclass
class Result:
    readings: list[GPUReading] = field(default_factory=list)
    failures: list[tuple[PodInfo, str, str]] = field(default_factory=list)  # pod, reason, error
    not_ready: list[PodInfo] = field(default_factory=list)
    pods: int = 0


async def _listed(run: Callable[[], Coroutine[Any, Any, None]], informer: Informer, what: str) -> None:
    """``run`` until ``informer``'s first list is in; a permanent error or the deadline ends the snapshot."""
    task = asyncio.create_task(run(), name=f"list-{what}")
    try:
        async with asyncio.timeout(LIST_DEADLINE):
            synced = asyncio.create_task(informer.synced.wait(), name=f"{what}-synced")
            await asyncio.wait([task, synced], return_when=asyncio.FIRST_COMPLETED)
            synced.cancel()
        if task.done():
            task.result()  # raises what stopped it
    except TimeoutError:
        raise GpuidError(f"could not list {what} within {LIST_DEADLINE:.0f}s (see the log above)") from None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, GpuidError):
            await task


async def scan_cluster(
    settings: Settings, clients: KubeClients, metrics: Metrics, progress: TextIO | None
) -> Result:
    """Every ready watched pod read once, at most ``WORKERS`` at a time."""
    watch, result = settings.drivers.scanned_pods(settings.watch), Result()
    pods: dict[str, PodInfo] = {}
    nodes = NodeDirectory(clients.core.list_node, metrics, node_name=watch.node_name)
    drivers = None
    if settings.drivers.scan_source == "auto":
        drivers = DriverPods(settings.drivers, clients.core.list_namespaced_pod, metrics, watch.node_name)
    listing = Informer(
        "pod",
        clients.core.list_namespaced_pod,
        slim_pod,
        lambda kind, pod: pods.update({pod.uid: pod}) if kind != "DELETED" else None,
        metrics,
        namespace=watch.namespace,
        label_selector=watch.label_selector,
        field_selector=f"spec.nodeName={watch.node_name}" if watch.node_name else "",
    )
    await _listed(listing.run, listing, "pods")
    await _listed(nodes.run, nodes.informer, "nodes")  # unreadable nodes: records get machine=null
    if drivers is not None:
        await _listed(drivers.run, drivers.informer, "driver pods")
    source = IdentitySource(settings.watch.container, settings.drivers, drivers)
    ready = sorted((p for p in pods.values() if p.ready), key=lambda p: (p.node, p.name))
    result.pods, result.not_ready = (
        len(ready),
        sorted((p for p in pods.values() if not p.ready), key=lambda p: p.name),
    )
    slots, done = asyncio.Semaphore(settings.scan.workers), 0

    async def scan(pod: PodInfo) -> None:
        nonlocal done
        async with slots:
            try:
                answered, report = await read_pod(clients.core_ws, pod, source, settings.scan, metrics)
            except ExecError as e:
                result.failures.append((pod, "timeout" if e.timed_out else "exec_error", str(e)))
            except ParseError as e:
                result.failures.append((pod, "parse_error", str(e)))
            else:
                result.readings.extend(
                    readings_from_report(
                        report,
                        cluster=settings.cluster_name,
                        node=pod.node,
                        machine=nodes.machine(pod.node),
                        source=answered.source,
                        pod_uid=answered.uid,
                    )
                )
        done += 1
        if progress is not None:
            progress.write(f"\rscanned {done}/{len(ready)} pods, {len(result.failures)} failed ")
            progress.flush()

    async with asyncio.TaskGroup() as tg:
        for pod in ready:
            tg.create_task(scan(pod), name=f"snapshot-{pod.name}")
    if progress is not None and ready:
        progress.write("\n")
    result.readings.sort(key=lambda r: (r.node, r.gpu_index, r.gpu_uuid))
    return result


def render(readings: Sequence[GPUReading], output: str, out: TextIO) -> None:
    if output == "json":
        out.writelines(r.to_json(event=r.EVENT) + "\n" for r in readings)
    elif output == "csv":
        out.write(encode_csv(readings).decode())
    else:
        cells = [[("-" if (v := getattr(r, f)) is None else str(v)) for _, f in TABLE] for r in readings]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _) in enumerate(TABLE)]
        for row in [[h for h, _ in TABLE], *cells]:
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
    out.flush()


def summary(result: Result, where: str) -> str:
    nodes = len({r.node for r in result.readings})
    reasons = Counter(reason for _, reason, _ in result.failures)
    failed = ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items())) or "none"
    lines = [f"{nodes} nodes, {len(result.readings)} GPUs from {result.pods} ready pods; failed: {failed}"]
    lines += [
        f"  failed {pod.source} on node {pod.node}: {reason}: {error}"
        for pod, reason, error in result.failures
    ]
    lines += [f"  not ready, not scanned: {pod.source} on node {pod.node}" for pod in result.not_ready]
    if not result.pods and not result.not_ready:
        lines.append(f"  no pod matches {where}: check NAMESPACE and LABEL_SELECTOR (or SCAN_SOURCE)")
    return "\n".join(lines) + "\n"


async def _export(settings: Settings, readings: list[GPUReading], metrics: Metrics) -> None:
    delivery = Delivery(build_exporters(settings.exporters), metrics, settings.delivery)
    task = asyncio.create_task(delivery.run(), name="snapshot-delivery")
    delivery.submit(readings)
    task.cancel()  # the drain delivers what was submitted, within SHUTDOWN_GRACE
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await delivery.drain(settings.shutdown_grace)


async def run_snapshot(
    settings: Settings,
    *,
    output: str = "",
    export: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Take one snapshot; the process exit code (0: every ready pod read, 1: some were not)."""
    out, err = out or sys.stdout, err or sys.stderr
    output = output or ("table" if out.isatty() else "json")
    metrics = Metrics()
    try:
        kube = settings.kube
        clients = await connect(
            kube.kubeconfig, pool_size=settings.scan.workers + 4, proxy_from_env=kube.proxy_from_env
        )
    except GpuidError as e:
        err.write(f"gpuid snapshot: {e}\n")
        return 1
    try:
        result = await scan_cluster(settings, clients, metrics, err if err.isatty() else None)
    except GpuidError as e:
        err.write(f"gpuid snapshot: {e}\n")
        return 1
    finally:
        await clients.close()
    render(result.readings, output, out)
    if export:
        await _export(settings, result.readings, metrics)
    watch = settings.drivers.scanned_pods(settings.watch)
    err.write(summary(result, f"namespace {watch.namespace}, selector {watch.label_selector!r}"))
    return 1 if result.failures else 0
