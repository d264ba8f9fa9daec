"""What driver pods add to the running service, in one place the ``App`` calls.

``SCAN_SOURCE`` decides which pods the scanner reads (device-plugin pods,
driver pods, or device-plugin with a per-node fallback to the driver pod);
``BUG_REPORT_ENABLED`` adds the bug reporter (node-annotation requests
through the existing node watch, failed scans through a scanner hook, a
timer, API mode). The second pod watch, of driver pods, runs only when one
of those needs it; with the defaults nothing here starts a task. Settings
are parsed in ``__init__``, so a bad value stops gpuid before any I/O.

The driver watch and the reporter live as long as the App; with leader
election, scanning terms come and go (``ScanSession``), so each new scanner
is hooked up again and the reporter only starts collections while leading.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from gpuid.bugreport import BugReporter
from gpuid.bugreport_settings import BugReportSettings
from gpuid.cluster import NodeDirectory
from gpuid.config import Settings
from gpuid.driverpods import DriverPods, DriverSettings, driver_container
from gpuid.kube import KubeClients
from gpuid.metrics import Metrics
from gpuid.scanner import Scanner

log = structlog.get_logger("gpuid.bugreport")
TaskFactory = tuple[str, Callable[[], Coroutine[Any, Any, None]]]


class DriverFeatures:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.driver = DriverSettings.from_settings(settings)
        self.bug_reports = BugReportSettings.from_settings(settings)
        self._metrics = metrics
        self.drivers: DriverPods | None = None
        self.reporter: BugReporter | None = None

    @property
    def needs_driver_watch(self) -> bool:
        return self.bug_reports.enabled or self.driver.scan_source == "auto"

    def scan_settings(self, settings: Settings) -> Settings:
        """``settings`` for a scan session: with ``SCAN_SOURCE=driver`` the watch covers driver pods."""
        if self.driver.scan_source != "driver":
            return settings
        watch = dataclasses.replace(
            settings.watch, namespace=self.driver.namespace, label_selector=self.driver.label_selector
        )
        return dataclasses.replace(settings, watch=watch)

    def start(
        self, clients: KubeClients, nodes: NodeDirectory, leading: Callable[[], bool]
    ) -> list[TaskFactory]:
        """Build the enabled features; returns (task name, coroutine function) of their tasks."""
        if not self.needs_driver_watch:
            return []
        self.drivers = drivers = DriverPods(
            self.driver, clients.core.list_namespaced_pod, self._metrics, self.settings.watch.node_name
        )
        tasks: list[TaskFactory] = [("watch-driver-pods", drivers.run)]
        if not self.bug_reports.enabled:
            return tasks
        self.reporter = reporter = BugReporter(
            self.bug_reports,
            cluster=self.settings.cluster_name,
            core=clients.core,
            core_ws=clients.core_ws,
            drivers=drivers,
            metrics=self._metrics,
            leading=leading,
        )
        nodes.listeners.append(reporter.on_node_event)
        tasks.append(("bug-reports", reporter.run))
        b = self.bug_reports
        log.info(
            "bug reports enabled",
            destinations=[d.name for d in reporter.destinations] + (["api"] if b.api else []),
            on_failure=b.on_failure,
            interval=b.interval,
            concurrency=b.concurrency,
            driver_namespace=self.driver.namespace,
            driver_selector=self.driver.label_selector,
        )
        if self.bug_reports.api is not None:
            from gpuid.bugreport_api import ApiPoller

            poller = ApiPoller(self.bug_reports.api, reporter, self.settings.watch.node_name, self._metrics)
            tasks.append(("bug-report-api", poller.run))
        return tasks

    def attach_scanner(self, scanner: Scanner) -> None:
        """Hook a (new) scanner up: driver containers, the auto fallback, on-failure reports."""
        if self.driver.scan_source == "driver":
            wanted = self.driver.container
            scanner.container_of = lambda pod: driver_container(pod, wanted)
        if self.driver.scan_source == "auto" and self.drivers is not None:
            scanner.fallback = self.drivers.fallback
        if self.bug_reports.on_failure and self.reporter is not None:
            scanner.on_failure = self.reporter.on_scan_failure
