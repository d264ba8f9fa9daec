"""One scanning term: the pod watch, the scanner and the checkpoint, started and stopped together.

Without leader election gpuid has one term that lasts the whole process.
With it, a term begins when this replica becomes the leader and ends when it
stops leading: at once when the Lease is lost (scans are cancelled, so two
replicas never scan together), or gracefully on shutdown (running scans may
finish). A scan that finishes when its term is over (``in_term`` says so:
the process was frozen past the Lease's deadline) submits nothing. Each term
starts from a fresh pod list, trusting the predecessor's checkpoint
(``gpuid.handover``) for what was already scanned. The node
directory and delivery outlive terms; they belong to the App.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gpuid.delivery.delivery import Delivery
from gpuid.kube.client import KubeClients
from gpuid.kube.informer import Informer
from gpuid.kube.nodegate import NodeExecGate
from gpuid.kube.nodes import NodeDirectory
from gpuid.kube.objects import PodInfo, slim_pod
from gpuid.metrics import Metrics
from gpuid.records import GPUReading
from gpuid.scan.handover import ScanProgress
from gpuid.scan.scanner import OnFailure, OnScanned, Scanner
from gpuid.scan.settings import ScanSettings, WatchSettings
from gpuid.scan.source import IdentitySource

# (kind, pod, inherited): every pod event; inherited = the predecessor's checkpoint covers it (no scan now)
OnPodEvent = Callable[[str, PodInfo, bool], None]


@dataclass(frozen=True)
class ScanSetup:
    """What every scanning term is built from; the App assembles it once."""

    watch: WatchSettings  # the pods scanned (driver pods with SCAN_SOURCE=driver)
    scan: ScanSettings
    cluster: str
    source: IdentitySource
    clients: KubeClients
    nodes: NodeDirectory
    delivery: Delivery
    metrics: Metrics
    on_scanned: OnScanned | None = None  # node labels
    on_failure: OnFailure | None = None  # bug reports on failure
    on_pod_event: OnPodEvent | None = None  # fleet series
    exec_gate: NodeExecGate = field(default_factory=NodeExecGate)  # shared with bug reports


class ScanSession:
    def __init__(
        self,
        setup: ScanSetup,
        *,
        inherited: Mapping[str, str] | None = None,
        in_term: Callable[[], bool] | None = None,
    ) -> None:
        w = setup.watch
        self._on_scanned = setup.on_scanned
        self._on_pod = setup.on_pod_event
        self.progress = ScanProgress(w.scope, inherited or {}, setup.delivery.tallies)
        self.scanner = Scanner(
            setup.scan,
            cluster=setup.cluster,
            source=setup.source,
            core_ws=setup.clients.core_ws,
            nodes=setup.nodes,
            delivery=setup.delivery,
            metrics=setup.metrics,
            on_scanned=self._scanned,
            on_failure=setup.on_failure,
            in_term=in_term,
            exec_gate=setup.exec_gate,
        )
        self.pods = Informer(
            "pod",
            setup.clients.core.list_namespaced_pod,
            slim_pod,
            self._on_pod_event,
            setup.metrics,
            namespace=w.namespace,
            label_selector=w.label_selector,
            field_selector=f"spec.nodeName={w.node_name}" if w.node_name else "",
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def _on_pod_event(self, kind: str, pod: PodInfo) -> None:
        inherited = kind != "DELETED" and self.progress.already_scanned(pod)
        if inherited:
            self.scanner.mark_scanned(pod)
            self.progress.inherit(pod)
        else:
            self.scanner.on_pod_event(kind, pod)
        self.progress.observe(kind, pod)
        if self._on_pod is not None:
            self._on_pod(kind, pod, inherited)

    def _scanned(self, pod: PodInfo, readings: Sequence[GPUReading]) -> None:
        self.progress.scanned(pod, len(readings))
        if self._on_scanned is not None:
            self._on_scanned(pod, readings)

    async def run(self) -> None:
        """Watch and scan until cancelled or stopped; a permanent watch error propagates."""
        if self._stopping:  # stopped before it started
            return
        async with asyncio.TaskGroup() as tg:
            self._tasks = [
                tg.create_task(self.pods.run(), name="watch-pods"),
                tg.create_task(self.scanner.run(), name="scanner"),
            ]
            await self.pods.synced.wait()
            self.progress.synced = True

    async def stop(self, grace: float) -> None:
        """Stop watching, let running scans end within ``grace`` seconds, then cancel the rest."""
        self._stopping = True
        if not self._tasks:
            return
        watch_task, scan_task = self._tasks
        watch_task.cancel()
        self.scanner.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.scanner.wait_idle()
        scan_task.cancel()
        await asyncio.wait(self._tasks)
