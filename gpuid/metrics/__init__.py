"""Every Prometheus metric gpuid exports, defined in one place.

Each ``Metrics`` owns its registry so several pipelines (tests, the demo) can
run in one process. Label values are bounded: exporter names, scan results and
a few reasons, never node or pod names — except the opt-in fleet series
(``GPU_INFO_METRIC``, ``NODE_GPU_METRICS``) of ``gpuid.metrics.fleet``, one
per GPU or per node, bounded by the number of nodes. ``gpuid.health`` serves them.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from gpuid import __version__
from gpuid.metrics.fleet import FleetSeries
from gpuid.records import CHANGES

SCAN_RESULTS = ("success", "exec_error", "parse_error", "timeout")
EXEC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
EXPORT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BUG_REPORT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):  # process_*, python_*
            r.register(standard)
        self.build_info = Info("gpuid_build", "gpuid version", registry=r)
        self.build_info.info({"version": __version__})
        self.scans = Counter("gpuid_scans_total", "Pod scans by result", ["result"], registry=r)
        self.exec_duration = Histogram(
            "gpuid_exec_duration_seconds", "Time of one exec in a pod", buckets=EXEC_BUCKETS, registry=r
        )
        self.gpus_observed = Gauge("gpuid_gpus_observed", "GPUs in the latest scan of each pod", registry=r)
        self.pods_tracked = Gauge("gpuid_pods_tracked", "Pods matched by the watch", registry=r)
        self.watch_restarts = Counter(
            "gpuid_watch_restarts_total",
            "Watch reconnects and relists by reason (error, expired, denied)",
            ["reason"],
            registry=r,
        )
        self.export_success = Counter(
            "gpuid_export_success_total", "Records delivered", ["exporter"], registry=r
        )
        self.export_failure = Counter(
            "gpuid_export_failure_total", "Failed delivery attempts", ["exporter"], registry=r
        )
        self.export_dropped = Counter(
            "gpuid_export_dropped_total", "Records given up on", ["exporter", "reason"], registry=r
        )
        self.export_queue = Gauge("gpuid_export_queue_depth", "Records waiting", ["exporter"], registry=r)
        self.exporter_up = Gauge(
            "gpuid_exporter_up",
            "1 while the exporter's backend is open and its last attempt answered (0: failing, parked)",
            ["exporter"],
            registry=r,
        )
        self.duplicate_uuids = Counter(
            "gpuid_duplicate_uuids_total", "GPU UUIDs reported twice in one scan", registry=r
        )
        self.smi_fallbacks = Counter(
            "gpuid_smi_fallbacks_total",
            "nvidia-smi replies the byte-level identity reader left to the full XML parser",
            registry=r,
        )
        self.smi_warnings = Counter(
            "gpuid_smi_warnings_total",
            "Pieces of text nvidia-smi printed around its XML, or -L lines that were not GPUs",
            registry=r,
        )
        self.smi_gpus_skipped = Counter(
            "gpuid_smi_gpus_skipped_total",
            "GPUs left out of a scan: no usable UUID, by reason",
            ["reason"],
            registry=r,
        )
        self.smi_values_nulled = Counter(
            "gpuid_smi_values_nulled_total",
            "Identity values recorded as null, by field and reason (placeholder, too_long, invalid)",
            ["field", "reason"],
            registry=r,
        )
        self.ready = Gauge("gpuid_ready", "1 when /readyz answers ready", registry=r)
        self.export_duration = Histogram(
            "gpuid_export_duration_seconds",
            "Time of one export call (one batch, one attempt)",
            ["exporter"],
            buckets=EXPORT_BUCKETS,
            registry=r,
        )
        self.spool_bytes = Gauge(
            "gpuid_spool_bytes", "Bytes waiting in the on-disk spool", ["exporter"], registry=r
        )
        self.spool_errors = Counter(
            "gpuid_spool_errors_total",
            "Spool damage survived, by error (set_aside, bad_line, write_failed, unusable)",
            ["exporter", "error"],
            registry=r,
        )
        # --- scale: leader election and node labels ---
        self.leader = Gauge("gpuid_leader", "1 while this replica scans (holds the Lease)", registry=r)
        self.leader_transitions = Counter(
            "gpuid_leader_transitions_total",
            "Leadership changes of this replica by event (acquired, lost, released)",
            ["event"],
            registry=r,
        )
        self.scans_discarded = Counter(
            "gpuid_scans_discarded_total",
            "Scans that ended after this replica lost the Lease: nothing of them was submitted",
            registry=r,
        )
        self.lease_errors = Counter(
            "gpuid_lease_errors_total", "Failed Lease requests by operation", ["operation"], registry=r
        )
        self.node_labels = Counter(
            "gpuid_node_label_updates_total",
            "Node label updates by result (patched, unchanged, forbidden, invalid, error, too_many)",
            ["result"],
            registry=r,
        )
        # --- bug reports (gpuid.bugreport) ---
        self.bug_reports = Counter(
            "gpuid_bug_reports_total",
            "Bug-report collections by trigger (request, failure, schedule, api) and result",
            ["trigger", "result"],
            registry=r,
        )
        self.bug_report_duration = Histogram(
            "gpuid_bug_report_duration_seconds",
            "Time of one bug-report collection: script, checksum, download, store",
            buckets=BUG_REPORT_BUCKETS,
            registry=r,
        )
        self.bug_report_bytes = Counter(
            "gpuid_bug_report_bytes_total", "Bytes of verified bug reports stored", registry=r
        )
        self.bug_report_errors = Counter(
            "gpuid_bug_report_errors_total",
            "Side failures of bug reports by stage (status, cleanup, api)",
            ["stage"],
            registry=r,
        )
        # --- fleet signals (gpuid.fleet) ---
        self.gpu_changes = Counter(
            "gpuid_gpu_changes_total",
            "Changes of a node's GPUs by kind (added, removed, replaced, moved)",
            ["change"],
            registry=r,
        )
        self.gpu_change_errors = Counter(
            "gpuid_gpu_change_errors_total",
            "Failed writes of GPU change Events and node state annotations by operation (event, annotation)",
            ["operation"],
            registry=r,
        )
        self.fleet = FleetSeries()
        r.register(self.fleet)
        for result in SCAN_RESULTS:
            self.scans.labels(result)
        for change in CHANGES:
            self.gpu_changes.labels(change)

    def init_exporter(self, name: str) -> None:
        """Create an exporter's series at zero so dashboards and rates see them at once."""
        self.export_success.labels(name)
        self.export_failure.labels(name)
        self.export_queue.labels(name)
        self.export_duration.labels(name)
        self.exporter_up.labels(name).set(0)  # until its backend has opened
        self.export_dropped.labels(name, "rejected")

    def render(self) -> bytes:
        self.fleet.rendering = True  # its per-GPU and per-node families come pre-rendered
        try:
            text = generate_latest(self.registry)
        finally:
            self.fleet.rendering = False
        return text + self.fleet.exposition().encode()
