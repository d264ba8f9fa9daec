"""From pod events to GPU records: decide what to scan, scan it, retry what failed.

A pod is scanned when it is Running with every container ready, once per pod
UID and restart count, so a container restart that makes it Ready again
triggers a fresh scan. At most ``WORKERS`` scans run at once, each under its
own deadline, so a slow pod only holds its own worker. A scan holds its
node's turn (``NodeExecGate``): a second pod on the node, or a bug report
being collected there, waits for it. Failed scans are retried with capped
backoff while the pod exists, never sooner than the API server's
``Retry-After``; deleted pods are forgotten.
With leader election a scan is published only if the term it ran in is
still held when it ends (``in_term``); otherwise it is counted and dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from gpuid.delivery.delivery import Delivery
from gpuid.errors import ExecError, ParseError
from gpuid.kube.nodegate import NodeExecGate
from gpuid.kube.nodes import NodeDirectory
from gpuid.kube.objects import PodInfo
from gpuid.metrics import Metrics
from gpuid.records import GPUReading, readings_from_report
from gpuid.retry import Backoff
from gpuid.scan.read import read_pod
from gpuid.scan.settings import ScanSettings
from gpuid.scan.source import IdentitySource

log = structlog.get_logger("gpuid.scanner")
OnScanned = Callable[[PodInfo, Sequence[GPUReading]], None]
OnFailure = Callable[[PodInfo, ExecError], None]


@dataclass
class _PodState:
    pod: PodInfo
    scanned_restarts: int | None = None  # restart count at the last successful scan
    queued: bool = False
    scanning: bool = False  # a worker has it: events meanwhile must not start a second scan
    retry: asyncio.TimerHandle | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=300.0))


class Scanner:
    def __init__(
        self,
        settings: ScanSettings,
        *,
        cluster: str,
        source: IdentitySource,
        core_ws: object,
        nodes: NodeDirectory,
        delivery: Delivery,
        metrics: Metrics,
        on_scanned: OnScanned | None = None,
        on_failure: OnFailure | None = None,
        in_term: Callable[[], bool] | None = None,
        exec_gate: NodeExecGate | None = None,
    ) -> None:
        self._settings = settings
        self._gate = exec_gate or NodeExecGate()  # shared with bug reports: one exec per node at a time
        self._in_term = in_term  # with leader election: is the term this scanner serves still ours?
        self._on_scanned = on_scanned  # after each successful scan (node labels, leader checkpoint)
        self._on_failure = on_failure  # after each failed exec (bug reports on failure)
        self._cluster = cluster
        self._source = source  # which container runs nvidia-smi, and where else to ask (SCAN_SOURCE)
        self._core_ws = core_ws
        self._nodes = nodes
        self._delivery = delivery
        self._metrics = metrics
        self._pods: dict[str, _PodState] = {}
        self._gpus: dict[str, int] = {}  # pod uid -> GPUs in its latest scan
        self._gpu_total = 0
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    def on_pod_event(self, kind: str, pod: PodInfo) -> None:
        """Informer callback: track the pod, queue a scan when it becomes due."""
        if kind == "DELETED":
            self._forget(pod.uid)
            return
        state = self._pods.get(pod.uid)
        if state is None:
            state = self._pods[pod.uid] = _PodState(pod)
        state.pod = pod
        self._metrics.pods_tracked.set(len(self._pods))
        due = pod.ready and state.scanned_restarts != pod.restarts
        if due and not (state.queued or state.scanning or state.retry or self._closing):
            state.queued = True
            self._queue.put_nowait(pod.uid)

    def mark_scanned(self, pod: PodInfo) -> None:
        """Track ``pod`` as scanned at its restart count (a previous leader scanned it)."""
        state = self._pods.setdefault(pod.uid, _PodState(pod))
        state.pod, state.scanned_restarts = pod, pod.restarts
        self._metrics.pods_tracked.set(len(self._pods))

    def _forget(self, uid: str) -> None:
        state = self._pods.pop(uid, None)
        if state and state.retry:
            state.retry.cancel()
        self._count_gpus(uid, 0)
        self._metrics.pods_tracked.set(len(self._pods))

    def _count_gpus(self, uid: str, gpus: int) -> None:
        """Keep ``gpuid_gpus_observed`` as a running total (no O(pods) sum per scan)."""
        self._gpu_total += gpus - self._gpus.pop(uid, 0)
        if gpus:
            self._gpus[uid] = gpus
        self._metrics.gpus_observed.set(self._gpu_total)

    def _requeue(self, uid: str) -> None:
        state = self._pods.get(uid)
        if state is None:
            return
        state.retry = None
        self.on_pod_event("MODIFIED", state.pod)

    async def run(self) -> None:
        """Run ``WORKERS`` scan workers until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for i in range(self._settings.workers):
                tg.create_task(self._worker(), name=f"scan-worker-{i}")

    async def _worker(self) -> None:
        await self._nodes.informer.synced.wait()
        while True:
            uid = await self._queue.get()
            if self._closing:
                return
            state = self._pods.get(uid)
            if state is None:
                continue
            state.queued = False
            if not state.pod.ready:
                continue
            self.in_flight += 1
            self._idle.clear()
            state.scanning = True
            try:
                await self._scan(state)
            finally:
                state.scanning = False
                self.in_flight -= 1
                if not self.in_flight:
                    self._idle.set()
            if self._pods.get(state.pod.uid) is state:  # a restart seen mid-scan still gets its rescan
                self.on_pod_event("MODIFIED", state.pod)

    async def _scan(self, state: _PodState) -> None:
        pod = source = state.pod
        result, error, failed = "success", "", None
        try:
            async with self._gate.hold(pod.node):
                source, report = await read_pod(
                    self._core_ws, pod, self._source, self._settings, self._metrics
                )
        except ExecError as e:
            result, error, failed = ("timeout" if e.timed_out else "exec_error"), str(e), e
        except ParseError as e:
            result, error = "parse_error", str(e)
        if self._in_term is not None and not self._in_term():
            self._discard(pod, result)
            return
        if failed is not None and self._on_failure is not None:
            self._on_failure(pod, failed)
        self._metrics.scans.labels(result).inc()
        if result != "success":
            self._schedule_retry(state, result, error, failed.retry_after if failed else None)
            return
        readings = readings_from_report(
            report,
            cluster=self._cluster,
            node=pod.node,
            machine=self._nodes.machine(pod.node),
            source=source.source,
            pod_uid=source.uid,
        )
        self._delivery.submit(readings)  # true when observed, even if the pod is deleted by now
        state.scanned_restarts = pod.restarts
        state.backoff.reset()
        if pod.uid in self._pods:
            self._count_gpus(pod.uid, len(readings))
        log.info("pod scanned", node=pod.node, pod=pod.source, gpus=len(readings))
        if self._on_scanned is not None:
            self._on_scanned(pod, readings)

    def _discard(self, pod: PodInfo, result: str) -> None:
        """A scan that ended after this replica's term: a successor owns the pod now."""
        self._metrics.scans_discarded.inc()
        log.warning(
            "scan finished after the leader lease was lost; result discarded",
            node=pod.node,
            pod=pod.source,
            result=result,
        )

    def _schedule_retry(self, state: _PodState, result: str, error: str, retry_after: float | None) -> None:
        pod = state.pod
        if pod.uid not in self._pods:
            return
        delay = None
        if not self._closing:
            delay = round(max(min(state.backoff.next_delay(), self._settings.retry_max), retry_after or 0), 1)
        log.error(
            "pod scan failed", node=pod.node, pod=pod.source, result=result, error=error, retry_in=delay
        )
        if delay is not None:  # closing: no timer may outlive this scanner
            state.retry = asyncio.get_running_loop().call_later(delay, self._requeue, pod.uid)

    async def wait_idle(self) -> None:
        """Return once no scan is running."""
        await self._idle.wait()

    def close(self) -> None:
        """Stop starting scans (those running go on), drop pending retries, zero this term's gauges."""
        self._closing = True
        self._metrics.gpus_observed.set(0)
        self._metrics.pods_tracked.set(0)
        for state in self._pods.values():
            if state.retry:
                state.retry.cancel()
                state.retry = None
