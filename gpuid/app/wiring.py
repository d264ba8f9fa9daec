"""Every long-lived part of the service, built from settings and wired through constructors.

This is the one place that knows which part talks to which: the driver-pod
watch feeds bug reports and the identity source, the node directory feeds
bug-report triggers, fleet signals and labels, and one exec gate is shared by
scans and bug reports so a node never has two exec conversations at once.
``gpuid.app.App`` runs what ``build`` returns; nothing here starts a task.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client

from gpuid.bugreport.api import ApiPoller
from gpuid.bugreport.reporter import BugReporter
from gpuid.bugreport.status import ANNOTATIONS as BUG_REPORT_ANNOTATIONS
from gpuid.config import Settings
from gpuid.delivery.delivery import Delivery
from gpuid.fleet.state import ANNOTATION as GPU_STATE_ANNOTATION
from gpuid.fleet.tracker import FleetTracker
from gpuid.fleet.writer import StateWriter
from gpuid.kube.client import KubeClients
from gpuid.kube.nodegate import NodeExecGate
from gpuid.kube.nodes import NodeDirectory, NodeListener
from gpuid.kube.objects import PodInfo
from gpuid.labels.writer import NodeLabeller
from gpuid.leader.elector import LeaderElector
from gpuid.leader.lease import lease_api
from gpuid.metrics import Metrics
from gpuid.records import GPUReading
from gpuid.scan.scanner import OnScanned
from gpuid.scan.session import ScanSetup
from gpuid.scan.source import DriverPods, IdentitySource

Task = tuple[str, Callable[[], Coroutine[Any, Any, None]]]


@dataclass
class Parts:
    """What ``build`` made: the scan setup for each term, the tasks that always run, and the parts
    the service (and its tests) look at."""

    setup: ScanSetup
    fleet: FleetTracker
    tasks: list[Task] = field(default_factory=list)
    drivers: DriverPods | None = None
    reporter: BugReporter | None = None
    elector: LeaderElector | None = None


def build(
    s: Settings,
    clients: KubeClients,
    metrics: Metrics,
    delivery: Delivery,
    *,
    leading: Callable[[], bool],
    checkpoint: Callable[[], dict[str, str] | None],
) -> Parts:
    """Build every part for ``s``; ``leading`` and ``checkpoint`` come from the running service."""
    tasks: list[Task] = [("delivery", delivery.run)]
    exec_gate = NodeExecGate()  # scans and bug reports: one exec conversation per node at a time
    drivers = reporter = None
    if s.bug_reports.enabled or s.drivers.scan_source == "auto":
        drivers = DriverPods(s.drivers, clients.core.list_namespaced_pod, metrics, s.watch.node_name)
        tasks.append(("watch-driver-pods", drivers.run))
    listeners: list[NodeListener] = []
    if s.bug_reports.enabled and drivers is not None:
        reporter = BugReporter(
            s.bug_reports,
            cluster=s.cluster_name,
            core=clients.core,
            core_ws=clients.core_ws,
            drivers=drivers,
            metrics=metrics,
            leading=leading,
            exec_gate=exec_gate,
        )
        listeners.append(reporter.on_node_event)
        tasks.append(("bug-reports", reporter.run))
        if s.bug_reports.api is not None:
            poller = ApiPoller(s.bug_reports.api, reporter, s.watch.node_name, metrics)
            tasks.append(("bug-report-api", poller.run))
    writer = None
    if s.fleet.change_events:
        writer = StateWriter(clients.core, client.EventsV1Api(clients.rest), metrics, s.fleet.instance)
        tasks.append(("gpu-state-writer", writer.run))
    fleet = FleetTracker(s.fleet, cluster=s.cluster_name, delivery=delivery, metrics=metrics, writer=writer)
    listeners.append(fleet.on_node_event)
    annotations = BUG_REPORT_ANNOTATIONS if reporter is not None else ()
    nodes = NodeDirectory(
        clients.core.list_node,
        metrics,
        node_name=s.watch.node_name,
        label_prefix=s.labels.prefix if s.labels.enabled else "",
        annotation_keys=(*annotations, *((GPU_STATE_ANNOTATION,) if writer is not None else ())),
        listeners=listeners,
    )
    tasks.append(("watch-nodes", nodes.run))
    labeller = NodeLabeller(s.labels, clients.core, nodes, metrics) if s.labels.enabled else None
    if labeller is not None:
        tasks.append(("node-labels", labeller.run))
    elector = None
    if s.leader.enabled:
        elector = LeaderElector(s.leader, lease_api(clients.rest, s.leader), metrics, checkpoint)
    setup = ScanSetup(
        watch=s.drivers.scanned_pods(s.watch),
        scan=s.scan,
        cluster=s.cluster_name,
        source=IdentitySource(s.watch.container, s.drivers, drivers),
        clients=clients,
        nodes=nodes,
        delivery=delivery,
        metrics=metrics,
        on_scanned=_each(fleet.on_scanned, labeller.on_scanned if labeller is not None else None),
        on_failure=reporter.on_scan_failure if reporter and s.bug_reports.on_failure else None,
        on_pod_event=fleet.on_pod_event,
        exec_gate=exec_gate,
    )
    return Parts(setup, fleet, tasks, drivers, reporter, elector)


def _each(*callbacks: OnScanned | None) -> OnScanned:
    """One scan callback that calls each of ``callbacks`` in turn."""
    chosen = [c for c in callbacks if c is not None]

    def scanned(pod: PodInfo, readings: Sequence[GPUReading]) -> None:
        for callback in chosen:
            callback(pod, readings)

    return scanned
