"""The running service: wires watch, scanner, delivery and HTTP into one task group.

Everything runs in one asyncio loop under one root ``TaskGroup``; a task that
dies takes the process down (Kubernetes restarts it) rather than leaving a
half-working service. SIGTERM/SIGINT start an ordered shutdown: stop watching,
let in-flight scans finish within the grace period, flush exporters, exit 0.
With ``LEADER_ELECTION`` the pod watch and scanner (a ``ScanSession``) run only
while this replica holds the Lease; the node directory, delivery and HTTP
server always run, so followers serve health and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from gpuid import __version__
from gpuid.bugreport_wiring import DriverFeatures
from gpuid.cluster import NodeDirectory
from gpuid.config import Settings
from gpuid.delivery import Delivery
from gpuid.errors import GpuidError
from gpuid.exporters import build_exporters
from gpuid.kube import KubeClients, connect
from gpuid.labels import LabelSettings
from gpuid.labelwriter import NodeLabeller
from gpuid.leader import LeaderElector
from gpuid.leasing import LeaderSettings, lease_api
from gpuid.metrics import HealthServer, Metrics
from gpuid.scanner import Scanner
from gpuid.session import ScanSession
from gpuid.watch import Informer

log = structlog.get_logger("gpuid.app")


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.exporters = build_exporters(settings)  # bad config fails here, before any I/O
        self.delivery = Delivery.from_settings(self.exporters, self.metrics, settings)
        self.server = HealthServer(self.metrics, self.readiness, settings.server_port)
        self.leader = LeaderSettings.from_settings(settings)
        self.labels = LabelSettings.from_settings(settings)
        self.labeller: NodeLabeller | None = None
        self.features = DriverFeatures(settings, self.metrics)  # SCAN_SOURCE, driver pods, bug reports
        self._stop = asyncio.Event()
        self.elector: LeaderElector | None = None
        self.session: ScanSession | None = None
        self.pods: Informer | None = None
        self.scanner: Scanner | None = None

    def stop(self) -> None:
        self._stop.set()

    def _leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def readiness(self) -> tuple[bool, str]:
        following = self.elector is not None and not self.elector.is_leader
        if not following and (self.pods is None or not self.pods.synced.is_set()):
            return False, "pod list not synced yet"
        if not self.delivery.healthy():
            return False, "an exporter is unhealthy"
        return True, "standing by: another replica is the leader" if following else "ready"

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
            code = 0
        except* GpuidError as group:  # a component gave up (e.g. 403 on the pod watch): exit, be restarted
            for error in group.exceptions:
                log.error("gpuid cannot go on", error=str(error), error_type=type(error).__name__)
            code = 1
        finally:
            await self.server.stop()
            await clients.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        log.info("gpuid stopped", exit_code=code)
        return code

    async def _serve(self, clients: KubeClients) -> None:
        prefix = self.labels.prefix if self.labels.enabled else ""
        nodes = NodeDirectory(clients.core.list_node, self.metrics, self.settings.watch.node_name, prefix)
        if self.labels.enabled:
            self.labeller = NodeLabeller(self.labels, clients.core, nodes, self.metrics)
        if self.leader.enabled:
            api = lease_api(clients.rest, self.leader)
            self.elector = LeaderElector(self.leader, api, self.metrics, self._checkpoint)
        try:
            async with asyncio.TaskGroup() as tg:
                export_task = tg.create_task(self.delivery.run(), name="delivery")
                nodes_task = tg.create_task(nodes.run(), name="watch-nodes")
                driver_tasks = [
                    tg.create_task(run(), name=name)
                    for name, run in self.features.start(clients, nodes, self._leading)
                ]
                if self.labeller is not None:
                    driver_tasks.append(tg.create_task(self.labeller.run(), name="node-labels"))
                # A task that fails makes the task group cancel what runs here and raise its error.
                if self.elector is not None:
                    await self._scan_while_leading(self.elector, clients, nodes)
                else:
                    await self._scan_until_stopped(clients, nodes)
                nodes_task.cancel()
                export_task.cancel()
                for task in driver_tasks:
                    task.cancel()
                await asyncio.wait([nodes_task, export_task, *driver_tasks])
        finally:
            # Also when a component failed: what is queued still gets its grace period (or the spool).
            await self.delivery.drain(self.settings.shutdown_grace)
            if self.elector is not None:  # after the drain, so the checkpoint covers what it delivered
                await self.elector.release()

    def _new_session(
        self, clients: KubeClients, nodes: NodeDirectory, inherited: dict[str, str]
    ) -> ScanSession:
        settings = self.features.scan_settings(self.settings)  # SCAN_SOURCE=driver watches driver pods
        on_scanned = self.labeller.on_scanned if self.labeller is not None else None
        session = ScanSession(
            settings, clients, nodes, self.delivery, self.metrics, inherited=inherited, on_scanned=on_scanned
        )
        self.features.attach_scanner(session.scanner)
        self.session, self.pods, self.scanner = session, session.pods, session.scanner
        return session

    async def _scan_until_stopped(self, clients: KubeClients, nodes: NodeDirectory) -> None:
        """No election (one replica, or per-node mode): one scan session for the whole run."""
        self.metrics.leader.set(1)
        session = self._new_session(clients, nodes, {})
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(session.run(), name="scan-session")
            await self._stop.wait()
            log.info("shutting down", in_flight=session.scanner.in_flight)
            await session.stop(self.settings.shutdown_grace / 2)
            running.cancel()  # stopped before it ever ran (SIGTERM during start-up): do not wait for it

    async def _scan_while_leading(
        self, elector: LeaderElector, clients: KubeClients, nodes: NodeDirectory
    ) -> None:
        """Scan only while holding the Lease: stop at once when it is lost, gracefully on shutdown."""
        while await self._acquire_unless_stopped(elector):
            session = self._new_session(clients, nodes, elector.inherited)
            async with asyncio.TaskGroup() as tg:
                running = tg.create_task(session.run(), name="scan-session")
                held = tg.create_task(elector.hold(), name="leader-lease")
                stopping = tg.create_task(self._stop.wait(), name="stop-signal")
                await asyncio.wait([held, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not held.done():  # shutting down: running scans may end while the Lease is renewed
                    log.info("shutting down", in_flight=session.scanner.in_flight)
                    ending = tg.create_task(
                        session.stop(self.settings.shutdown_grace / 2), name="scan-session-stop"
                    )
                    await asyncio.wait([held, ending], return_when=asyncio.FIRST_COMPLETED)
                    ending.cancel()
                if held.done():  # lost the Lease: stop scanning now, before it can expire
                    session.scanner.close()  # no retry timer outlives the term; its gauges go to 0
                    self.session = None  # its checkpoint is not written under another term
                for task in (running, held, stopping):
                    task.cancel()

    async def _acquire_unless_stopped(self, elector: LeaderElector) -> bool:
        """Wait to become the leader; False when gpuid is stopping first."""
        if self._stop.is_set():
            return False
        async with asyncio.TaskGroup() as tg:
            acquiring = tg.create_task(elector.acquire(), name="leader-acquire")
            stopping = tg.create_task(self._stop.wait(), name="stop-signal")
            await asyncio.wait([acquiring, stopping], return_when=asyncio.FIRST_COMPLETED)
            acquiring.cancel()
            stopping.cancel()
        return elector.is_leader and not self._stop.is_set()

    def _checkpoint(self) -> dict[str, str] | None:
        """The scan checkpoint the Lease carries for a successor (see ``gpuid.handover``)."""
        return self.session.progress.annotations() if self.session is not None else None
