"""The fleet signals of every scan: GPU identity series, changes of a node's GPUs, GPUs a node is missing.

After each successful scan of a node the tracker

- shows the node's GPUs in ``gpuid_gpu_info`` / ``gpuid_node_gpus`` /
  ``gpuid_node_gpu_capacity`` (``FleetSeries``), until the node or the pod
  that was scanned goes away, or the term ends;
- compares the node's GPUs with what was last recorded for it — in memory,
  else (``GPU_CHANGE_EVENTS``) the node's ``gpuid.io/gpus`` annotation — and
  reports each change once: ``gpuid_gpu_changes_total``, a ``gpu_changed`` log
  line and a ``gpu_changed`` record for the exporters, plus (with
  ``GPU_CHANGE_EVENTS``) a Kubernetes Event, through ``StateWriter``. The
  first sight of a node is no change;
- logs ``gpus_missing`` when the node answers with fewer GPUs than it
  advertises (``gpuid.fleet.expected``), naming the PCI slots last recorded
  that did not answer.

What is recorded in memory belongs to one term: a new leader starts from the
annotations (or from nothing without them), never from its own stale memory.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence

import structlog

from gpuid.delivery.delivery import Delivery
from gpuid.fleet.expected import expected_gpus
from gpuid.fleet.settings import FleetSettings
from gpuid.fleet.state import ANNOTATION, Change, NodeGpus, Slot, decode, diff, shared, slots_of
from gpuid.fleet.whereabouts import Whereabouts
from gpuid.fleet.writer import Job, StateWriter
from gpuid.kube.objects import NodeInfo, PodInfo
from gpuid.metrics import Metrics
from gpuid.metrics.fleet import MAX_FLEET_NODES, NodeSeries
from gpuid.records import GpuChange, GPUReading, utc_now

log = structlog.get_logger("gpuid.fleet")


class FleetTracker:
    def __init__(
        self,
        settings: FleetSettings,
        *,
        cluster: str,
        delivery: Delivery,
        metrics: Metrics,
        writer: StateWriter | None = None,
    ) -> None:
        self._settings = settings
        self._cluster = cluster
        self._nodes: dict[str, NodeInfo] = {}  # as the node watch last told (the same objects it keeps)
        self._delivery = delivery
        self._metrics = metrics
        self._series = metrics.fleet
        self._series.gpu_info, self._series.per_node = settings.gpu_info, settings.node_metrics
        self._writer = writer  # GPU_CHANGE_EVENTS: Events and the node annotation
        self._known: dict[str, NodeGpus] = {}  # node -> its GPUs as recorded this term
        self._persisted: dict[str, NodeGpus] = {}  # node -> its annotation, from the node watch
        self._where = Whereabouts()  # where each GPU was last recorded: moves
        self._series_pod: dict[str, str] = {}  # node -> uid of the pod whose scan the series show
        self._full = False

    # -- terms and listeners --------------------------------------------------------------------
    def start_term(self) -> None:
        self._reset()

    def end_term(self) -> None:
        """A lost Lease: no series, no state, no pending write of this term survives it."""
        self._reset()

    def _reset(self) -> None:
        forgotten, self._known = self._known, {}
        for node in forgotten:
            self._reindex(node)
        self._series_pod.clear()
        self._series.clear()
        if self._writer is not None:
            self._writer.clear()

    def on_node_event(self, kind: str, node: NodeInfo) -> None:
        """Node watch: what the node advertises, its annotation, and GPUs that leave with a deleted node."""
        if kind == "DELETED":
            self._nodes.pop(node.name, None)
            self._persisted.pop(node.name, None)
            gone = self._known.pop(node.name, None)
            self._reindex(node.name)
            if gone is not None:
                self._where.departed(node.name, gone.gpus)
            self._drop_series(node.name)
            return
        self._nodes[node.name] = node
        self.on_stored(node.name, node.annotation(ANNOTATION))

    def on_stored(self, node: str, value: str) -> None:
        """The node's annotation now holds ``value`` (from the node watch, or a patch's answer)."""
        state = decode(value) if value else None
        if state is None:
            self._persisted.pop(node, None)
        else:
            self._persisted[node] = state
        self._reindex(node)

    def on_pod_event(self, kind: str, pod: PodInfo, inherited: bool) -> None:
        """Pod watch: a deleted pod takes its node's series along; an inherited one shows what is known."""
        if kind == "DELETED":
            if self._series_pod.get(pod.node) == pod.uid:
                self._drop_series(pod.node)
        elif inherited and pod.node not in self._series.nodes and (state := self._persisted.get(pod.node)):
            # Scanned by the previous leader: show what its annotation holds until a scan says more.
            machine = self._machine(pod.node) or ""
            gpus = tuple(
                (g.uuid, pod.node, g.pci_bus_id or "", "", "", pod.node, g.serial or "", "", "", machine)
                for g in state.gpus
            )
            if self._series.update(pod.node, NodeSeries(gpus, None)):
                self._series_pod[pod.node] = pod.uid

    def _drop_series(self, node: str) -> None:
        self._series.drop(node)
        self._series_pod.pop(node, None)

    # -- each scan ------------------------------------------------------------------------------
    def on_scanned(self, pod: PodInfo, readings: Sequence[GPUReading]) -> None:
        node = pod.node
        if not node:
            return
        now = slots_of(readings)
        prev = self._known.get(node) or (self._persisted.get(node) if self._writer is not None else None)
        self._show(pod, readings, now, prev)
        if prev is not None and prev.gpus == now:
            return
        if node not in self._known and len(self._known) >= MAX_FLEET_NODES:
            self._log_full(node)
            return
        changes = diff(prev, now, functools.partial(self._where.located, node)) if prev is not None else []
        new = NodeGpus(prev.seq + 1 if prev is not None else 1, now)
        self._known[node] = new
        self._reindex(node)
        for change in changes:
            self._where.arrived(change.new)
            if change.old is not None:
                self._where.departed(node, [change.old])
        report = functools.partial(self._report, node, self._machine(node), utc_now())
        if self._writer is None:
            for change in changes:
                report(change)
            return
        info = self._nodes.get(node)
        uid = info.uid if info is not None else ""
        first = NodeGpus(0, ())  # first sight: no change, only the state to write
        token = secrets.token_hex(8)
        self._writer.submit(Job(node, uid, prev or first, new, changes, report, self.on_stored, token))

    def _show(
        self, pod: PodInfo, readings: Sequence[GPUReading], now: Sequence[Slot], prev: NodeGpus | None
    ) -> None:
        node = pod.node
        mig = any(r.mig_mode == "Enabled" for r in readings)
        expected = expected_gpus(self._nodes.get(node), mig_seen=mig, source=self._settings.expected_gpus)
        if expected is not None and len(now) < expected:
            answered = {g.pci_bus_id for g in now}
            silent = sorted({g.pci_bus_id for g in prev.gpus if g.pci_bus_id} - answered) if prev else []
            log.warning(
                "gpus_missing",
                node=node,
                pod=pod.source,
                expected=expected,
                found=len(now),
                missing_pci_bus_ids=silent or None,  # None: no earlier record says which slots
            )
        machine = self._machine(node) or ""
        gpus = tuple(_labels(r, machine) for r in {r.gpu_uuid: r for r in readings}.values())
        if self._series.update(node, NodeSeries(gpus, expected)):
            self._series_pod[node] = pod.uid
        else:
            self._log_full(node)

    def _machine(self, node: str) -> str | None:
        info = self._nodes.get(node)
        return info.machine if info is not None else None

    def _log_full(self, node: str) -> None:
        if not self._full:
            self._full = True
            log.error("too many nodes to track; new ones get no fleet series or change detection", node=node)

    # -- where GPUs were ------------------------------------------------------------------------
    def _reindex(self, node: str) -> None:
        self._where.record(node, self._known.get(node) or self._persisted.get(node))

    # -- reporting ------------------------------------------------------------------------------
    def _report(self, node: str, machine: str | None, at: str, change: Change) -> None:
        """Count, log and export one change (once: the writer calls this only for claimed changes)."""
        record = GpuChange(
            cluster=self._cluster,
            node=node,
            machine=machine,
            change=change.kind,
            gpu_uuid=change.gpu.uuid,
            old_uuid=change.old.uuid if change.old and change.new else None,
            old_serial=change.old.serial if change.old else None,
            new_serial=change.new.serial if change.new else None,
            pci_bus_id=change.gpu.pci_bus_id,
            from_node=change.from_node,
            observed_at=at,
        )
        self._metrics.gpu_changes.labels(change.kind).inc()
        log.info("gpu_changed", **{k: v for k, v in record.to_dict().items() if v is not None})
        self._delivery.submit([record])


def _labels(r: GPUReading, machine: str) -> tuple[str, ...]:
    """``gpuid.metrics.fleet.GPU_INFO_LABELS`` of one reading."""
    module = "" if r.module_id is None else str(r.module_id)
    return (
        r.gpu_uuid,
        r.node,
        shared(r.pci_bus_id) or "",
        shared(r.product_name) or "",
        str(r.gpu_index),
        r.node,
        r.gpu_serial or "",
        shared(r.chassis_serial) or "",
        module,
        machine,
    )
