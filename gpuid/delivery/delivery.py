"""Delivery: one bounded queue, batcher and retry loop per exporter.

The watcher hands records to ``Delivery.submit`` and never waits on a backend;
each exporter drains its own lane, so a backend that is down only delays its
own records. Transient failures are retried with capped, jittered backoff for
as long as it takes; permanent ones (auth, missing bucket or table) drop the
batch, counted and logged. A full queue drops the incoming records, counted
(``reason="queue_full"``) — unless ``SPOOL_DIR`` is set: then every record is
written to disk first, memory holds a window of it, and what ``drain`` cannot
deliver within the grace period is sent by the next process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from itertools import islice

import structlog

from gpuid.delivery.lane import Lane, Tally
from gpuid.delivery.settings import DeliverySettings
from gpuid.delivery.spool import Spool
from gpuid.errors import ExportError, SpoolCorruptError
from gpuid.exporters import Exporter
from gpuid.metrics import Metrics
from gpuid.records import Record
from gpuid.retry import Backoff

log = structlog.get_logger("gpuid.delivery")

CLOSE_TIMEOUT = 5.0  # for closing every exporter, together


class Delivery:
    def __init__(
        self, exporters: Sequence[Exporter], metrics: Metrics, config: DeliverySettings | None = None
    ) -> None:
        self._config = cfg = config or DeliverySettings()
        self._metrics = metrics
        segment = min(1000, cfg.queue_size)  # records per spool file
        self._spool = Spool(cfg.spool_dir, cfg.spool_max_bytes, segment) if cfg.spool_dir else None
        self._lanes = [Lane(e, self._spool.lane(e.name) if self._spool else None) for e in exporters]
        for lane in self._lanes:
            metrics.init_exporter(lane.name)
            if lane.spool is not None and lane.spool.segments:
                log.info("spooled records recovered", exporter=lane.name, records=lane.waiting())
            self._refill(lane)

    def healthy(self) -> bool:
        """Every backend reached and its last attempt succeeded (drives /readyz)."""
        return all(lane.healthy for lane in self._lanes)

    def waiting(self) -> dict[str, int]:
        """Records not yet acknowledged, per exporter."""
        return {lane.name: lane.waiting() for lane in self._lanes}

    def tallies(self) -> list[Tally]:
        """Each lane's running counts, for the handover checkpoint."""
        return [lane.tally() for lane in self._lanes]

    def submit(self, readings: Sequence[Record]) -> None:
        """Queue ``readings`` for every exporter; never blocks, never drops silently."""
        if not readings:
            return
        for lane in self._lanes:
            self._accept(lane, list(readings))
            self._update_gauges(lane)
            lane.wakeup.set()

    def _accept(self, lane: Lane, readings: list[Record]) -> None:
        room = self._config.queue_size - len(lane.pending)
        if lane.spool is None:
            lane.pending.extend(readings[:room])
            if len(readings) > room:
                self._drop(lane, len(readings) - room, "queue_full")
            else:
                lane.dropping = False
            return
        to_memory = not lane.spool.has_unloaded() and len(readings) <= room
        try:
            written = lane.spool.append(readings, loaded=to_memory)
        except OSError as e:
            log.error("spool write failed", exporter=lane.name, error=str(e))
            self._drop(lane, len(readings), "spool_error")
            return
        if not written:
            self._drop(lane, len(readings), "spool_full")
            return
        lane.dropping = False
        if to_memory:
            lane.pending.extend(readings)

    def _drop(self, lane: Lane, count: int, reason: str) -> None:
        self._metrics.export_dropped.labels(lane.name, reason).inc(count)
        if not lane.dropping:
            lane.dropping = True
            log.error("records dropped", exporter=lane.name, reason=reason, records=count)

    def _refill(self, lane: Lane) -> None:
        """Move spooled segments into memory while they fit (or memory is empty)."""
        spool = lane.spool
        while spool is not None and (segment := spool.next_unloaded()) is not None:
            if lane.pending and len(lane.pending) + segment.count > self._config.queue_size:
                break
            try:
                lane.pending.extend(spool.load_next())
            except SpoolCorruptError as e:
                count = spool.discard_next()
                lane.left += count  # it was behind what memory holds: count all of that as lost too
                lane.lost_through = max(lane.lost_through, lane.left + len(lane.pending))
                self._metrics.export_dropped.labels(lane.name, "spool_corrupt").inc(count)
                log.error("spool segment unreadable, set aside", exporter=lane.name, error=str(e))

    def _update_gauges(self, lane: Lane) -> None:
        self._metrics.export_queue.labels(lane.name).set(lane.waiting())
        if lane.spool is not None:
            self._metrics.spool_bytes.labels(lane.name).set(lane.spool.bytes)

    def _backoff(self) -> Backoff:
        cap = self._config.retry_max_backoff
        return Backoff(base=min(0.5, cap), cap=cap)

    async def run(self) -> None:
        """Run every lane until cancelled; backend failures never end it."""
        async with asyncio.TaskGroup() as tg:
            for lane in self._lanes:
                tg.create_task(self._run_lane(lane), name=f"export-{lane.name}")

    async def _run_lane(self, lane: Lane) -> None:
        await self._connect(lane)
        while True:
            await self._deliver(lane, await self._next_batch(lane))

    async def _connect(self, lane: Lane) -> None:
        """Open the backend at start-up so /readyz tells the truth before the first record."""
        backoff = self._backoff()
        while not lane.opened:
            try:
                await lane.exporter.open()
            except ExportError as e:
                self._metrics.export_failure.labels(lane.name).inc()
                log.warning("exporter unavailable", exporter=lane.name, error=str(e), transient=e.transient)
                if not e.transient:
                    return  # each batch tries once more, and is dropped if it still fails
                await asyncio.sleep(backoff.next_delay())
            else:
                lane.opened = lane.healthy = True

    async def _next_batch(self, lane: Lane) -> list[Record]:
        """Wait for a full batch, or for ``flush_interval`` after the first record."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while len(lane.pending) < self._config.batch_size:
            if lane.pending:
                deadline = deadline or loop.time() + self._config.flush_interval
                if loop.time() >= deadline:
                    break
            lane.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await lane.wakeup.wait()
        lane.batch = list(islice(lane.pending, self._config.batch_size))
        return lane.batch

    async def _deliver(self, lane: Lane, batch: list[Record]) -> None:
        """Send ``batch`` until it is acknowledged or fails permanently."""
        backoff = self._backoff()
        while True:
            try:
                if not lane.opened:
                    await lane.exporter.open()
                    lane.opened = True
                with self._metrics.export_duration.labels(lane.name).time():
                    await lane.exporter.export(batch)
            except Exception as e:  # a backend bug must not stop delivery
                error = e if isinstance(e, ExportError) else ExportError(f"{type(e).__name__}: {e}")
                if not isinstance(e, ExportError):
                    log.exception("exporter raised an unexpected error", exporter=lane.name)
            else:
                lane.healthy = True
                self._metrics.export_success.labels(lane.name).inc(len(batch))
                self._ack(lane, len(batch))
                return
            lane.healthy = False
            self._metrics.export_failure.labels(lane.name).inc()
            delay, fields = backoff.next_delay(), {"exporter": lane.name, "error": str(error)}
            if not error.transient:
                log.error("export failed permanently, batch dropped", records=len(batch), **fields)
                self._metrics.export_dropped.labels(lane.name, "permanent").inc(len(batch))
                self._ack(lane, len(batch), lost=True)
                return
            log.warning("export failed, will retry", retry_in=round(delay, 2), **fields)
            await asyncio.sleep(delay)

    def _ack(self, lane: Lane, count: int, *, lost: bool = False) -> None:
        for _ in range(count):
            lane.pending.popleft()
        lane.left += count
        if lost:
            lane.lost_through = max(lane.lost_through, lane.left)
        if lane.spool is not None:
            lane.spool.ack(count)
        lane.batch = []
        self._refill(lane)
        self._update_gauges(lane)

    async def drain(self, grace: float) -> None:
        """After ``run`` is cancelled: deliver what waits within ``grace``, then close the exporters."""
        try:
            async with asyncio.timeout(grace), asyncio.TaskGroup() as tg:
                for lane in self._lanes:
                    tg.create_task(self._drain_lane(lane), name=f"drain-{lane.name}")
        except TimeoutError:
            left = {name: n for name, n in self.waiting().items() if n}
            if self._spool is not None:
                log.warning("shutdown grace ran out, records stay spooled for the next start", records=left)
            else:
                for name, count in left.items():
                    self._metrics.export_dropped.labels(name, "shutdown").inc(count)
                log.error("shutdown grace ran out, records dropped", records=left)
        finally:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.gather(*(n.exporter.close() for n in self._lanes), return_exceptions=True)
            if self._spool is not None:
                self._spool.close()

    async def _drain_lane(self, lane: Lane) -> None:
        while True:
            self._refill(lane)
            if not lane.pending:
                return
            # An interrupted batch is sent again unchanged, so exporters can recognise the retry.
            lane.batch = lane.batch or list(islice(lane.pending, self._config.batch_size))
            await self._deliver(lane, lane.batch)
