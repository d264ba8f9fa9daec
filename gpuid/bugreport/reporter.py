"""Bug-report collection as a service: triggers in, one verified report per job out.

Three triggers feed one queue: a node annotation (``request``), a scan that
failed with an nvidia-smi error (``failure``, at most once per node per
``BUG_REPORT_MIN_INTERVAL``) and a timer (``schedule``); API mode adds
``api``. Jobs run under two limits: one collection per node at a time (a
request waits for a running collection on its node; a failure or schedule
job for a busy node is dropped, the running one serves it) and at most
``BUG_REPORT_CONCURRENCY`` cluster-wide. Every collection is counted,
timed and logged once with node, request id, size, sha256 and destination;
requests get their outcome written back on the node.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from gpuid.bugreport.collect import Collected, Target, collect_report, report_name
from gpuid.bugreport.settings import BugReportSettings
from gpuid.bugreport.sinks import Destination, LocalDirectory
from gpuid.bugreport.status import (
    BUG_REPORT_REQUEST,
    FAILED,
    RUNNING,
    SUCCESS,
    ReportStatus,
    pending_request,
    write_status,
)
from gpuid.errors import ApiError, BugReportError, ExecError
from gpuid.kube.objects import NodeInfo, PodInfo
from gpuid.metrics import Metrics
from gpuid.scan.source import DriverPods

log = structlog.get_logger("gpuid.bugreport")
RECHECK_SECONDS = 10.0


@dataclass(frozen=True)
class Job:
    node: str
    trigger: str  # request, failure, schedule, api
    request_id: str = ""


def build_destinations(settings: BugReportSettings, cluster: str) -> list[Destination]:
    destinations: list[Destination] = []
    if settings.directory is not None:
        destinations.append(LocalDirectory(settings.directory, settings.keep))
    if settings.s3 is not None:
        from gpuid.bugreport.s3 import S3Destination

        destinations.append(S3Destination(settings.s3, cluster))
    return destinations


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
    ) -> None:
        self.settings = settings
        self._core = core
        self._core_ws = core_ws
        self._drivers = drivers
        self._metrics = metrics
        self.destinations = build_destinations(settings, cluster) if destinations is None else destinations
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
                    self.submit(Job(node, "schedule"))

    async def _recheck(self) -> None:
        """Requests seen while not leading (or left running by a lost leader) are taken up here."""
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            for node in list(self._requested.values()):
                self._take_request(node)

    async def _run_job(self, job: Job) -> None:
        try:
            await self.collect_in_turn(job)
        except BugReportError:
            pass  # counted, logged and (for requests) written to the node by collect()
        finally:
            self._jobs[job.node] -= 1
            if not self._jobs[job.node]:
                del self._jobs[job.node]

    async def collect_in_turn(self, job: Job) -> Collected:
        """``collect`` once the node is free and a cluster-wide slot is."""
        async with self._node_locks[job.node], self._slots:
            return await self.collect(job)

    async def collect(self, job: Job) -> Collected:
        """Collect for ``job`` now, with metrics, one log line and (for requests) the status annotation.

        Raises ``BugReportError`` after counting, logging and reporting the failure.
        """
        await self._drivers.informer.synced.wait()  # "no driver pod" only once the list says so
        if job.trigger == "request":
            await self._status(job, ReportStatus(job.request_id, RUNNING))
        loop = asyncio.get_running_loop()
        started = loop.time()
        pod: PodInfo | None = None
        try:
            pod, container = self._driver_pod(job.node)
            name = report_name(job.node, job.request_id, datetime.now(UTC))
            target = Target(job.node, pod, container)
            collected = await collect_report(
                self._core_ws,
                target,
                name=name,
                timeout=self.settings.timeout,
                destinations=self.destinations,
                metrics=self._metrics,
            )
        except BugReportError as e:
            self._metrics.bug_reports.labels(job.trigger, e.result).inc()
            log.error(
                "bug report failed",
                node=job.node,
                pod=pod.source if pod else None,
                trigger=job.trigger,
                request_id=job.request_id,
                result=e.result,
                error=str(e),
            )
            if job.trigger == "request":
                await self._status(job, ReportStatus(job.request_id, FAILED, error=str(e)[:500]))
            raise
        finally:
            self._metrics.bug_report_duration.observe(loop.time() - started)
        self._metrics.bug_reports.labels(job.trigger, "success").inc()
        self._metrics.bug_report_bytes.inc(collected.size)
        log.info(
            "bug report collected",
            node=job.node,
            pod=pod.source,
            trigger=job.trigger,
            request_id=job.request_id,
            file=collected.file_name,
            size=collected.size,
            sha256=collected.sha256,
            destination=list(collected.locations),
            seconds=round(loop.time() - started, 2),
        )
        if job.trigger == "request":
            done = ReportStatus(
                job.request_id,
                SUCCESS,
                file=collected.file_name,
                locations=collected.locations,
                size=collected.size,
                sha256=collected.sha256,
            )
            await self._status(job, done)
        return collected

    def _driver_pod(self, node: str) -> tuple[PodInfo, str]:
        pod = self._drivers.pod_on(node)
        if pod is None:
            s = self._drivers.settings
            raise BugReportError(
                f"no ready driver pod on node {node} (namespace {s.namespace}, selector {s.label_selector})"
            )
        container = self._drivers.container_of(pod)
        if container is None:
            raise BugReportError(f"driver pod {pod.source} has several containers: set DRIVER_CONTAINER")
        return pod, container

    async def _status(self, job: Job, status: ReportStatus) -> None:
        try:
            await write_status(self._core, job.node, status)
        except ApiError as e:
            self._metrics.bug_report_errors.labels("status").inc()
            log.error(
                "could not write the bug-report status",
                node=job.node,
                request_id=job.request_id,
                error=str(e),
            )
