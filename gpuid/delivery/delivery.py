"""Delivery: one bounded queue, batcher and sender per exporter.

The watcher hands records to ``Delivery.submit`` and never waits on a backend;
each exporter drains its own lane, so a backend that is down only delays its
own records. How a failed attempt is retried, and what it may cost, is
``gpuid.delivery.send``: only a record the backend refuses is ever dropped;
a misconfigured backend parks its lane with every record kept. A full queue
drops the incoming records, counted (``reason="queue_full"``) — unless
``SPOOL_DIR`` is set: then every record is written to disk first, memory holds
a window of it, and what ``drain`` cannot deliver within the grace period is
sent by the next process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from itertools import islice

import structlog

from gpuid.delivery.lane import Lane, Tally
from gpuid.delivery.send import Sender
from gpuid.delivery.settings import DeliverySettings
from gpuid.delivery.spool import Spool
from gpuid.exporters import Exporter, batch_limit
from gpuid.metrics import Metrics
from gpuid.records import Record

log = structlog.get_logger("gpuid.delivery")

CLOSE_TIMEOUT = 5.0  # for closing every exporter, together


class Delivery:
    def __init__(
        self, exporters: Sequence[Exporter], metrics: Metrics, config: DeliverySettings | None = None
    ) -> None:
        self._config = cfg = config or DeliverySettings()
        self._metrics = metrics
        segment = min(1000, cfg.queue_size)  # records per spool file
        spool = Spool(cfg.spool_dir, cfg.spool_max_bytes, segment, metrics=metrics) if cfg.spool_dir else None
        self._spool = spool
        self._lanes: list[Lane] = []
        self._senders: dict[str, Sender] = {}
        for exporter in exporters:
            metrics.init_exporter(exporter.name)
            lane = Lane(
                exporter, spool.lane(exporter.name) if spool else None, batch_limit(exporter, cfg.batch_size)
            )
            self._lanes.append(lane)
            self._senders[lane.name] = Sender(lane, metrics, cfg.retry_max_backoff)
            if lane.spool is not None and lane.spool.segments:
                log.info("spooled records recovered", exporter=lane.name, records=lane.waiting())
            self._refill(lane)

    def healthy(self) -> bool:
        """Every backend open and its last attempt answered (``gpuid_exporter_up`` all 1)."""
        return all(lane.up for lane in self._lanes)

    def down(self) -> list[str]:
        """The exporters whose ``gpuid_exporter_up`` is 0: failing, parked, stalled, or not open yet."""
        return [lane.name for lane in self._lanes if not lane.up]

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
        except OSError as e:  # rolled back: the spool is as it was, these records are refused
            self._drop(lane, len(readings), "spool_error", error=f"spool write failed: {e}")
            return
        if not written:
            self._drop(lane, len(readings), "spool_full")
            return
        lane.dropping = False
        if to_memory:
            lane.pending.extend(readings)

    def _drop(self, lane: Lane, count: int, reason: str, error: str = "") -> None:
        self._metrics.export_dropped.labels(lane.name, reason).inc(count)
        if not lane.dropping:
            lane.dropping = True
            log.error("records dropped", exporter=lane.name, reason=reason, records=count, error=error)

    def _refill(self, lane: Lane) -> None:
        """Move spooled segments into memory while they fit (or memory is empty)."""
        spool = lane.spool
        while spool is not None and (segment := spool.next_unloaded()) is not None:
            if lane.pending and len(lane.pending) + segment.count > self._config.queue_size:
                break
            records, lost = spool.load_next()  # what it cannot read back, it counts and logs
            if lost:
                lane.left += lost  # they were behind what memory holds: count all of that as lost too
                lane.lost_through = max(lane.lost_through, lane.left + len(lane.pending))
            lane.pending.extend(records)

    def _update_gauges(self, lane: Lane) -> None:
        self._metrics.export_queue.labels(lane.name).set(lane.waiting())
        if lane.spool is not None:
            self._metrics.spool_bytes.labels(lane.name).set(lane.spool.bytes)

    async def run(self) -> None:
        """Run every lane until cancelled; backend failures never end it."""
        async with asyncio.TaskGroup() as tg:
            for lane in self._lanes:
                tg.create_task(self._run_lane(lane), name=f"export-{lane.name}")

    async def _run_lane(self, lane: Lane) -> None:
        sender = self._senders[lane.name]
        await sender.connect()
        while True:
            batch = await self._next_batch(lane)
            self._done(lane, len(batch), await sender.send(batch))

    async def _next_batch(self, lane: Lane) -> list[Record]:
        """Wait for a full batch, or for ``flush_interval`` after the first record."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while len(lane.pending) < lane.batch_size:
            if lane.pending:
                deadline = deadline or loop.time() + self._config.flush_interval
                if loop.time() >= deadline:
                    break
            lane.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await lane.wakeup.wait()
        lane.batch = list(islice(lane.pending, lane.batch_size))
        return lane.batch

    def _done(self, lane: Lane, count: int, refused: list[int]) -> None:
        """The batch at the head of ``lane`` is settled: stored, except ``refused``."""
        lane.leave(count, refused)
        self._refill(lane)
        self._update_gauges(lane)

    async def drain(self, grace: float) -> None:
        """After ``run`` is cancelled: deliver what waits within ``grace``, then close the exporters."""
        try:
            async with asyncio.timeout(grace), asyncio.TaskGroup() as tg:
                for lane in self._lanes:
                    tg.create_task(self._drain_lane(lane), name=f"drain-{lane.name}")
        except TimeoutError:
            kept = {lane.name: lane.waiting() for lane in self._lanes if lane.waiting() and lane.spool}
            lost = {lane.name: lane.waiting() for lane in self._lanes if lane.waiting() and not lane.spool}
            if kept:
                log.warning("shutdown grace ran out, records stay spooled for the next start", records=kept)
            if lost:
                for name, count in lost.items():
                    self._metrics.export_dropped.labels(name, "shutdown").inc(count)
                log.error("shutdown grace ran out, records dropped", records=lost)
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
            lane.batch = lane.batch or list(islice(lane.pending, lane.batch_size))
            self._done(lane, len(lane.batch), await self._senders[lane.name].send(lane.batch))
