"""What gpuid tells the outside: Prometheus metrics and the /metrics, /healthz, /readyz endpoints.

Each ``Metrics`` owns its registry so several pipelines (tests, the demo) can
run in one process. Label values are bounded: exporter names, scan results and
a few reasons, never node or pod names. ``HealthServer`` serves them with
aiohttp in gpuid's own event loop, so a wedged loop fails the liveness probe
instead of hiding behind a healthy helper thread.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from gpuid import __version__

SCAN_RESULTS = ("success", "exec_error", "parse_error", "timeout")
EXEC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
EXPORT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BUG_REPORT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.build_info = Info("gpuid_build", "gpuid version", registry=r)
        self.build_info.info({"version": __version__})
        self.scans = Counter("gpuid_scans_total", "Pod scans by result", ["result"], registry=r)
        self.exec_duration = Histogram(
            "gpuid_exec_duration_seconds", "Time of one exec in a pod", buckets=EXEC_BUCKETS, registry=r
        )
        self.gpus_observed = Gauge("gpuid_gpus_observed", "GPUs in the latest scan of each pod", registry=r)
        self.pods_tracked = Gauge("gpuid_pods_tracked", "Pods matched by the watch", registry=r)
        self.watch_restarts = Counter(
            "gpuid_watch_restarts_total", "Watch reconnects and relists", ["reason"], registry=r
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
        self.duplicate_uuids = Counter(
            "gpuid_duplicate_uuids_total", "GPU UUIDs reported twice in one scan", registry=r
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
        # --- scale: leader election and node labels ---
        self.leader = Gauge("gpuid_leader", "1 while this replica scans (holds the Lease)", registry=r)
        self.leader_transitions = Counter(
            "gpuid_leader_transitions_total",
            "Leadership changes of this replica by event (acquired, lost, released)",
            ["event"],
            registry=r,
        )
        self.lease_errors = Counter(
            "gpuid_lease_errors_total", "Failed Lease requests by operation", ["operation"], registry=r
        )
        self.node_labels = Counter(
            "gpuid_node_label_updates_total",
            "Node label updates by result (patched, unchanged, forbidden, invalid, error)",
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
        for result in SCAN_RESULTS:
            self.scans.labels(result)

    def init_exporter(self, name: str) -> None:
        """Create an exporter's series at zero so dashboards and rates see them at once."""
        self.export_success.labels(name)
        self.export_failure.labels(name)
        self.export_queue.labels(name)
        self.export_duration.labels(name)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    def __init__(self, metrics: Metrics, is_ready: Callable[[], tuple[bool, str]], port: int) -> None:
        self._metrics = metrics
        self._is_ready = is_ready
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _metrics_handler(self, _: web.Request) -> web.Response:
        ready, _why = self._is_ready()
        self._metrics.ready.set(1 if ready else 0)
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, why = self._is_ready()
        return web.Response(text=f"{why}\n", status=200 if ready else 503)

    async def start(self, host: str = "0.0.0.0") -> None:  # noqa: S104 - probes come from the kubelet
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
