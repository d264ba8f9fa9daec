"""What driver pods add to the running service, in one place the ``App`` calls.

``SCAN_SOURCE`` decides which pods the scanner reads (device-plugin pods,
driver pods, or device-plugin with a per-node fallback to the driver pod);
``BUG_REPORT_ENABLED`` adds the bug reporter (node-annotation requests
through the existing node watch, failed scans through a scanner hook, a
timer, API mode). The second pod watch, of driver pods, runs only when one
of those needs it; with the defaults nothing here starts a task. Settings
are parsed in ``__init__``, so a bad value stops gpuid before any I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from gpuid.bugreport import BugReporter
from gpuid.bugreport_settings import BugReportSettings
from gpuid.cluster import NodeDirectory
from gpuid.config import Settings
from gpuid.driverpods import DriverPods, DriverSettings, driver_container
from gpuid.kube import KubeClients
from gpuid.metrics import Metrics
from gpuid.scanner import Scanner


class DriverFeatures:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.driver = DriverSettings.from_settings(settings)
        self.bug_reports = BugReportSettings.from_settings(settings)
        self._metrics = metrics
        self.drivers: DriverPods | None = None
        self.reporter: BugReporter | None = None
        self._tasks: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []

    @property
    def scans_driver_pods(self) -> bool:
        return self.driver.scan_source == "driver"

    def scan_target(self) -> tuple[str, str]:
        """Namespace and label selector of the pods the scanner watches."""
        if self.scans_driver_pods:
            return self.driver.namespace, self.driver.label_selector
        return self.settings.watch.namespace, self.settings.watch.label_selector

    def attach(self, clients: KubeClients, nodes: NodeDirectory, scanner: Scanner) -> None:
        """Hook the enabled features into the node watch and the scanner; remember their tasks."""
        wanted = self.driver.container
        if self.scans_driver_pods:
            scanner.container_of = lambda pod: driver_container(pod, wanted)
        if not (self.bug_reports.enabled or self.driver.scan_source == "auto"):
            return
        self.drivers = drivers = DriverPods(
            self.driver, clients.core.list_namespaced_pod, self._metrics, self.settings.watch.node_name
        )
        self._tasks.append(("watch-driver-pods", drivers.run))
        if self.driver.scan_source == "auto":
            scanner.fallback = drivers.fallback
        if not self.bug_reports.enabled:
            return
        self.reporter = reporter = BugReporter(
            self.bug_reports,
            cluster=self.settings.cluster_name,
            core=clients.core,
            core_ws=clients.core_ws,
            drivers=drivers,
            metrics=self._metrics,
        )
        nodes.listeners.append(reporter.on_node_event)
        if self.bug_reports.on_failure:
            scanner.on_failure = reporter.on_scan_failure
        self._tasks.append(("bug-reports", reporter.run))
        if self.bug_reports.api is not None:
            from gpuid.bugreport_api import ApiPoller

            poller = ApiPoller(self.bug_reports.api, reporter, self.settings.watch.node_name, self._metrics)
            self._tasks.append(("bug-report-api", poller.run))

    def tasks(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """(task name, coroutine function) of every background task ``attach`` set up."""
        return list(self._tasks)

