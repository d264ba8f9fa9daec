"""Bug-report collection as a service: triggers in, one verified report per job out.

Three triggers feed one queue: a node annotation (``request``), a scan that
failed with an nvidia-smi error (``failure``, at most once per node per
``BUG_REPORT_MIN_INTERVAL``) and a timer (``schedule``); API mode adds
``api``. Jobs run under two limits: one collection per node at a time (a
request waits for a running collection on its node; a failure or schedule
job for a busy node is dropped, the running one serves it) and at most
``BUG_REPORT_CONCURRENCY`` cluster-wide; a collection also waits for a scan
running on its node (``NodeExecGate``), and scans of it wait for the
collection. Every collection is counted,
timed and logged once with node, request id, size, sha256 and destination;
requests get their outcome written back on the node (``gpuid.bugreport.jobs``).
A bug report feature
that fails never ends the process: an unexpected error in a collection or a
trigger fails that one report (counted as
``gpuid_bug_report_errors_total{stage="internal"}``, logged with the node)
and the reporter keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from gpuid.bugreport.collect import Collected
from gpuid.bugreport.jobs import Job, JobRunner, build_destinations
from gpuid.bugreport.settings import BugReportSettings
from gpuid.bugreport.sinks import Destination
from gpuid.bugreport.status import BUG_REPORT_REQUEST, pending_request
from gpuid.errors import BugReportError, ExecError
from gpuid.kube.nodegate import NodeExecGate
from gpuid.kube.objects import NodeInfo, PodInfo
from gpuid.log import log_errors
from gpuid.metrics import Metrics
from gpuid.scan.source import DriverPods

log = structlog.get_logger("gpuid.bugreport")
RECHECK_SECONDS = 10.0


class BugReporter:
    def __init__(
        self,
        settings: BugReportSettings,
        *,
        cluster: str,
        core: Any,
        core_ws: Any,
        drivers: DriverPods,
        metrics: Metrics,
        destinations: list[Destination] | None = None,
        leading: Callable[[], bool] = lambda: True,
        exec_gate: NodeExecGate | None = None,
    ) -> None:
        self.settings = settings
        self._gate = exec_gate or NodeExecGate()  # shared with the scanner: one exec per node at a time
        self._drivers = drivers
        self._metrics = metrics
        self.destinations = (
            build_destinations(settings, cluster, metrics) if destinations is None else destinations
        )
        self._runner = JobRunner(
            settings,
            core=core,
            core_ws=core_ws,
            drivers=drivers,
            metrics=metrics,
            destinations=self.destinations,
        )
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._node_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._jobs: Counter[str] = Counter()  # node -> jobs queued or running
        self._accepted: dict[str, str] = {}  # node -> last request id taken on by this process
        self._last_failure_report: dict[str, float] = {}
        self._leading = leading  # with leader election only the leader collects
        self._requested: dict[str, NodeInfo] = {}  # nodes carrying a request annotation

    # -- triggers (synchronous callbacks from the watches and the scanner) --------------------------
    def on_node_event(self, kind: str, node: NodeInfo) -> None:
        with self._contained("node event", node.name):
            self._on_node_event(kind, node)

    def _on_node_event(self, kind: str, node: NodeInfo) -> None:
        if kind == "DELETED" or not node.annotation(BUG_REPORT_REQUEST):
            self._requested.pop(node.name, None)
            return
        self._requested[node.name] = node
        self._take_request(node)

    def _take_request(self, node: NodeInfo) -> None:
        request = pending_request(node)
        if request is None or self._accepted.get(node.name) == request or not self._leading():
            return
        self._accepted[node.name] = request
        self.submit(Job(node.name, "request", request))

    def on_scan_failure(self, pod: PodInfo, error: ExecError) -> None:
        """Scanner hook: nvidia-smi ran and failed (not a transport error, not a missing binary)."""
        with self._contained("scan failure", pod.node):
            self._on_scan_failure(pod, error)

    def _on_scan_failure(self, pod: PodInfo, error: ExecError) -> None:
        if not self.settings.on_failure or error.timed_out or error.exit_code in (None, 126, 127):
            return
        if not self._leading():
            return
        now = asyncio.get_running_loop().time()
        last = self._last_failure_report.get(pod.node)
        if (last is not None and now - last < self.settings.min_interval) or self._jobs[pod.node]:
            return
        self._last_failure_report[pod.node] = now
        self.submit(Job(pod.node, "failure"))

    def submit(self, job: Job) -> None:
        if job.trigger != "request" and self._jobs[job.node]:
            return
        self._jobs[job.node] += 1
        self._queue.put_nowait(job)

    # -- running ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Take jobs off the queue (and start the timer) until cancelled."""
        s, d = self.settings, self._drivers.settings
        log.info(
            "bug reports enabled",
            destinations=[x.name for x in self.destinations] + (["api"] if s.api else []),
            on_failure=s.on_failure,
            interval=s.interval,
            concurrency=s.concurrency,
            driver_namespace=d.namespace,
            driver_selector=d.label_selector,
        )
        async with asyncio.TaskGroup() as tg:
            if self.settings.interval > 0:
                tg.create_task(self._schedule(), name="bug-report-schedule")
            tg.create_task(self._recheck(), name="bug-report-requests")
            while True:
                job = await self._queue.get()
                tg.create_task(self._run_job(job), name=f"bug-report-{job.node}")

    async def _schedule(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval)
            if self._leading():
                for node in self._drivers.nodes():
                    with self._contained("schedule", node):
                        self.submit(Job(node, "schedule"))

    async def _recheck(self) -> None:
        """Requests seen while not leading (or left running by a lost leader) are taken up here."""
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            for node in list(self._requested.values()):
                with self._contained("request", node.name):
                    self._take_request(node)

    @contextlib.contextmanager
    def _contained(self, what: str, node: str) -> Iterator[None]:
        """One feature failing never ends the process: a bug here is counted, logged and survived."""
        try:
            yield
        except Exception as e:
            self._metrics.bug_report_errors.labels("internal").inc()
            log_errors("bug reports: unexpected error", e, node=node, during=what)

    async def _run_job(self, job: Job) -> None:
        try:
            # A BugReportError was counted, logged and (for requests) written to the node by collect().
            with self._contained("collection", job.node), contextlib.suppress(BugReportError):
                await self.collect_in_turn(job)
        finally:
            self._jobs[job.node] -= 1
            if not self._jobs[job.node]:
                del self._jobs[job.node]

    async def collect_in_turn(self, job: Job) -> Collected:
        """``collect`` once the node is free, a cluster-wide slot is, and no scan runs on the node."""
        async with self._node_locks[job.node], self._slots, self._gate.hold(job.node):
            return await self.collect(job)

    async def collect(self, job: Job) -> Collected:
        """Collect for ``job`` now (see ``JobRunner.collect``)."""
        return await self._runner.collect(job)
