"""One bug-report job, start to end: find the driver pod, collect, and account for the outcome.

Every collection, whatever triggered it, ends the same way: counted by
trigger and result, timed, logged once (node, pod, request id, size,
sha256, destination) and, for a request, answered in the node's status
annotation. An unexpected error inside a collection (a bug, not a failure
gpuid knows) fails that one report like any other failure, counted as
``gpuid_bug_report_errors_total{stage="internal"}`` with its traceback in
the log, so it can never take the reporter (or gpuid) down with it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from gpuid.bugreport.collect import Collected, Target, collect_report, report_name
from gpuid.bugreport.settings import BugReportSettings
from gpuid.bugreport.sinks import Destination, LocalDirectory
from gpuid.bugreport.status import FAILED, RUNNING, SUCCESS, ReportStatus, write_status
from gpuid.errors import ApiError, BugReportError
from gpuid.kube.objects import PodInfo
from gpuid.log import log_errors
from gpuid.metrics import Metrics
from gpuid.scan.source import DriverPods

log = structlog.get_logger("gpuid.bugreport")


@dataclass(frozen=True)
class Job:
    node: str
    trigger: str  # request, failure, schedule, api
    request_id: str = ""


def build_destinations(
    settings: BugReportSettings, cluster: str, metrics: Metrics | None = None
) -> list[Destination]:
    destinations: list[Destination] = []
    if settings.directory is not None:
        destinations.append(LocalDirectory(settings.directory, settings.keep, metrics=metrics))
    if settings.s3 is not None:
        from gpuid.bugreport.s3 import S3Destination

        destinations.append(S3Destination(settings.s3, cluster))
    return destinations


class JobRunner:
    def __init__(
        self,
        settings: BugReportSettings,
        *,
        core: Any,
        core_ws: Any,
        drivers: DriverPods,
        metrics: Metrics,
        destinations: list[Destination],
    ) -> None:
        self.settings = settings
        self._core = core  # REST: the status annotation
        self._core_ws = core_ws  # WebSocket: exec in the driver pod
        self._drivers = drivers
        self._metrics = metrics
        self._destinations = destinations  # shared with the reporter (API mode adds one)

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
            collected = await self._collect(target, name)
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

    async def _collect(self, target: Target, name: str) -> Collected:
        """``collect_report``; an unexpected error in it (a bug) fails this report, not the reporter."""
        try:
            return await collect_report(
                self._core_ws,
                target,
                name=name,
                timeout=self.settings.timeout,
                destinations=self._destinations,
                metrics=self._metrics,
                max_bytes=self.settings.max_bytes,
            )
        except BugReportError:
            raise
        except Exception as e:
            self._metrics.bug_report_errors.labels("internal").inc()
            log_errors("bug report collection raised an unexpected error", e, node=target.node)
            raise BugReportError(f"unexpected error: {type(e).__name__}: {e}") from e

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
