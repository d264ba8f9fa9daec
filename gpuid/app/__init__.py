"""The composition root: builds every part of the running service and supervises its tasks.

Everything runs in one asyncio loop under one root ``TaskGroup``; a task that
dies takes the process down (Kubernetes restarts it) rather than leaving a
half-working service. SIGTERM/SIGINT start an ordered shutdown: stop watching,
let in-flight scans finish within the grace period, flush exporters, exit 0.
With ``LEADER_ELECTION`` the pod watch and scanner (a ``ScanSession``) run only
while this replica holds the Lease; the node directory, delivery and HTTP
server always run, so followers serve health and metrics. Every part gets
what it talks to through its constructor, in ``gpuid.app.wiring`` and
nowhere else; this module runs what it builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence

import structlog

from gpuid import __version__
from gpuid.app.wiring import Parts, build
from gpuid.bugreport.reporter import BugReporter
from gpuid.config import Settings
from gpuid.delivery.delivery import Delivery
from gpuid.errors import GpuidError
from gpuid.exporters import Exporter, build_exporters
from gpuid.fleet.tracker import FleetTracker
from gpuid.health import HealthServer
from gpuid.kube.client import KubeClients, connect
from gpuid.kube.informer import Informer
from gpuid.leader.elector import LeaderElector
from gpuid.log import log_errors
from gpuid.metrics import Metrics
from gpuid.scan.scanner import Scanner
from gpuid.scan.session import ScanSession, ScanSetup
from gpuid.scan.source import DriverPods

log = structlog.get_logger("gpuid.app")


class App:
    def __init__(self, settings: Settings, *, exporters: Sequence[Exporter] | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        # Bad exporter config fails here, before any I/O; tests inject their own exporters.
        self.exporters = list(exporters) if exporters is not None else build_exporters(settings.exporters)
        self.delivery = Delivery(self.exporters, self.metrics, settings.delivery)
        self.server = HealthServer(self.metrics, self.readiness, settings.server_port)
        self._stop = asyncio.Event()
        self.drivers: DriverPods | None = None
        self.reporter: BugReporter | None = None
        self.elector: LeaderElector | None = None
        self.session: ScanSession | None = None
        self.pods: Informer | None = None
        self.scanner: Scanner | None = None
        self.fleet: FleetTracker | None = None

    def stop(self) -> None:
        self._stop.set()

    def _leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def readiness(self) -> tuple[bool, str]:
        """Ready: the pod list is synced and scanning, or standing by as a follower.

        Backends are not part of it: an outage keeps records queued (``gpuid_exporter_up``
        says so), and failing every replica's probe would only block drains and rollouts.
        """
        following = self.elector is not None and not self.elector.is_leader
        if not following and (self.pods is None or not self.pods.synced.is_set()):
            return False, "pod list not synced yet"
        why = "standing by: another replica is the leader" if following else "ready"
        if down := self.delivery.down():
            why += f" (exporters down, records kept: {', '.join(down)})"
        return True, why

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        kube = self.settings.kube
        clients = await connect(
            kube.kubeconfig, pool_size=self.settings.scan.workers + 8, proxy_from_env=kube.proxy_from_env
        )
        try:
            try:
                await self.server.start()
            except OSError as e:  # the port is taken, or not ours to bind
                raise GpuidError(f"cannot serve /metrics on port {self.settings.server_port}: {e}") from e
            log.info(
                "gpuid started",
                version=__version__,
                cluster=self.settings.cluster_name,
                namespace=self.settings.watch.namespace,
                selector=self.settings.watch.label_selector,
                exporters=[e.name for e in self.exporters],
                port=self.server.port,
            )
            await self._serve(clients)
            code = 0
        except* GpuidError as group:  # a component gave up (e.g. 403 on the pod watch): exit, be restarted
            log_errors("gpuid cannot go on", group, with_traceback=False)
            code = 1
        except* Exception as group:  # a bug: its cause in one line each, never "errors in a TaskGroup"
            log_errors("gpuid crashed", group)
            code = 1
        finally:
            await self.server.stop()
            await clients.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        log.info("gpuid stopped", exit_code=code)
        return code

    def _build(self, clients: KubeClients) -> Parts:
        parts = build(
            self.settings,
            clients,
            self.metrics,
            self.delivery,
            leading=self._leading,
            checkpoint=self._checkpoint,
        )
        self.drivers, self.reporter, self.elector, self.fleet = (
            parts.drivers, parts.reporter, parts.elector, parts.fleet
        )  # fmt: skip
        return parts

    async def _serve(self, clients: KubeClients) -> None:
        parts = self._build(clients)
        setup, tasks = parts.setup, parts.tasks
        try:
            async with asyncio.TaskGroup() as tg:
                # A task that fails makes the task group cancel what runs here and raise its error.
                running = [tg.create_task(run(), name=name) for name, run in tasks]
                if self.elector is not None:
                    await self._scan_while_leading(self.elector, setup)
                else:
                    await self._scan_until_stopped(setup)
                for task in running:
                    task.cancel()
                await asyncio.wait(running)
        finally:
            # Also when a component failed: what is queued still gets its grace period (or the spool).
            await self.delivery.drain(self.settings.shutdown_grace)
            if self.elector is not None:  # after the drain, so the checkpoint covers what it delivered
                await self.elector.release()

    def _new_session(
        self, setup: ScanSetup, inherited: dict[str, str], in_term: Callable[[], bool] | None = None
    ) -> ScanSession:
        if self.fleet is not None:
            self.fleet.start_term()
        session = ScanSession(setup, inherited=inherited, in_term=in_term)
        self.session, self.pods, self.scanner = session, session.pods, session.scanner
        return session

    async def _scan_until_stopped(self, setup: ScanSetup) -> None:
        """No election (one replica, or per-node mode): one scan session for the whole run."""
        self.metrics.leader.set(1)
        session = self._new_session(setup, {})
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(session.run(), name="scan-session")
            await self._stop.wait()
            log.info("shutting down", in_flight=session.scanner.in_flight)
            await session.stop(self.settings.shutdown_grace / 2)
            running.cancel()  # stopped before it ever ran (SIGTERM during start-up): do not wait for it

    async def _scan_while_leading(self, elector: LeaderElector, setup: ScanSetup) -> None:
        """Scan only while holding the Lease: stop at once when it is lost, gracefully on shutdown."""
        while await self._acquire_unless_stopped(elector):
            session = self._new_session(setup, elector.inherited, elector.term_guard())
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
                    if self.fleet is not None:
                        self.fleet.end_term()  # a follower exports no GPU series
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
        """The scan checkpoint the Lease carries for a successor (see ``gpuid.scan.handover``)."""
        return self.session.progress.annotations() if self.session is not None else None
