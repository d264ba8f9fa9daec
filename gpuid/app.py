"""The running service: wires watch, scanner, delivery and HTTP into one task group.

Everything runs in one asyncio loop under one root ``TaskGroup``; a task that
dies takes the process down (Kubernetes restarts it) rather than leaving a
half-working service. SIGTERM/SIGINT start an ordered shutdown: stop watching,
let in-flight scans finish within the grace period, flush exporters, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from gpuid import __version__
from gpuid.cluster import NodeDirectory, slim_pod
from gpuid.config import Settings
from gpuid.delivery import Delivery
from gpuid.exporters import build_exporters
from gpuid.kube import KubeClients, connect
from gpuid.metrics import Metrics
from gpuid.scanner import Scanner
from gpuid.server import HealthServer
from gpuid.watch import Informer

log = structlog.get_logger("gpuid.app")


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.exporters = build_exporters(settings)  # bad config fails here, before any I/O
        self.delivery = Delivery.from_settings(self.exporters, self.metrics, settings)
        self.server = HealthServer(self.metrics, self.readiness, settings.server_port)
        self._stop = asyncio.Event()
        self.pods: Informer | None = None
        self.scanner: Scanner | None = None

    def stop(self) -> None:
        self._stop.set()

    def readiness(self) -> tuple[bool, str]:
        if self.pods is None or not self.pods.synced.is_set():
            return False, "pod list not synced yet"
        if not self.delivery.healthy():
            return False, "an exporter is unhealthy"
        return True, "ready"

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        clients = await connect(self.settings.kubeconfig, pool_size=self.settings.scan.workers + 8)
        try:
            await self.server.start()
            log.info(
                "gpuid started",
                version=__version__,
                cluster=self.settings.cluster_name,
                namespace=self.settings.watch.namespace,
                selector=self.settings.watch.label_selector,
                exporters=list(self.settings.exporters),
                port=self.server.port,
            )
            await self._serve(clients)
        finally:
            await self.server.stop()
            await clients.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        log.info("gpuid stopped")
        return 0

    async def _serve(self, clients: KubeClients) -> None:
        w = self.settings.watch
        node_selector = f"spec.nodeName={w.node_name}" if w.node_name else ""
        nodes = NodeDirectory(clients.core.list_node, self.metrics, w.node_name)
        self.scanner = scanner = Scanner(
            self.settings.scan,
            cluster=self.settings.cluster_name,
            container=w.container,
            core_ws=clients.core_ws,
            nodes=nodes,
            delivery=self.delivery,
            metrics=self.metrics,
        )
        self.pods = pods = Informer(
            "pod",
            clients.core.list_namespaced_pod,
            slim_pod,
            scanner.on_pod_event,
            self.metrics,
            namespace=w.namespace,
            label_selector=w.label_selector,
            field_selector=node_selector,
        )
        async with asyncio.TaskGroup() as tg:
            export_task = tg.create_task(self.delivery.run(), name="delivery")
            watch_tasks = [
                tg.create_task(pods.run(), name="watch-pods"),
                tg.create_task(nodes.run(), name="watch-nodes"),
            ]
            scan_task = tg.create_task(scanner.run(), name="scanner")
            # A task that fails makes the task group cancel this wait and raise its error.
            await self._stop.wait()
            log.info("shutting down", in_flight=scanner.in_flight)
            for task in watch_tasks:
                task.cancel()
            scanner.close()
            await self._finish_scans(scanner, scan_task)
            export_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await export_task
            await self.delivery.drain(self.settings.shutdown_grace)

    async def _finish_scans(self, scanner: Scanner, scan_task: asyncio.Task[None]) -> None:
        """Let scans already running end within half the grace period, then cancel the workers."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.shutdown_grace / 2):
                await scanner.wait_idle()
        scan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scan_task
