"""Sending one lane's batches: every attempt under a deadline, every failure in its class.

An exporter's error says what a failure may cost (``gpuid.errors``):

- ``ExportError`` — *transient* (network, 5xx, throttling, a deadline): the same
  records again after a capped, jittered backoff, for as long as it takes.
- ``RecordError`` — *record*: these records can never be stored. Exactly those
  are dropped, each counted (``reason="rejected"``) and logged with its node,
  pod and GPU; the rest of the batch is sent again at once. Without
  ``indexes`` the batch is bisected until the refused records stand alone:
  for one bad record in n, about 2·log2(n) extra attempts.
- ``LaneError`` (or any ``ExportError`` not marked transient) — *lane*: the
  backend is misconfigured. The lane parks: it keeps its queue and spool,
  tries again every ``EXPORT_RETRY_MAX_BACKOFF`` to twice that, logs once
  per episode, and resumes by itself once an attempt succeeds.

Anything else an exporter raises is a bug in it, and transient: nothing is
ever dropped for it. An attempt that outlives its deadline (the exporter's
``timeout`` plus a second) is cancelled and reported stalled.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import structlog

from gpuid.delivery.lane import Lane
from gpuid.errors import ExportError, LaneError, RecordError
from gpuid.exporters import attempt_timeout
from gpuid.metrics import Metrics
from gpuid.records import GPUReading, Record
from gpuid.retry import Backoff

log = structlog.get_logger("gpuid.delivery")

STALL_GRACE = 1.0  # beyond the exporter's own timeout, so its own clearer error normally comes first


class Sender:
    """Opens one lane's backend and sends its batches until each record is stored or refused."""

    def __init__(self, lane: Lane, metrics: Metrics, retry_max_backoff: float) -> None:
        self._lane = lane
        self._metrics = metrics
        self._cap = retry_max_backoff
        self.deadline = attempt_timeout(lane.exporter) + STALL_GRACE

    def _set_up(self, up: bool) -> None:
        self._lane.up = up
        self._metrics.exporter_up.labels(self._lane.name).set(1 if up else 0)

    async def connect(self) -> None:
        """Open the backend, retrying until it opens (so ``gpuid_exporter_up`` is true before any record)."""
        backoff = Backoff(base=min(0.5, self._cap), cap=self._cap)
        while not self._lane.opened:
            error = await self._attempt(self._lane.exporter.open, "open")
            if error is None:
                self._lane.opened = True
                self._answered()
                return
            if isinstance(error, RecordError):  # an open carries no records: not a record failure
                error = ExportError(str(error))
            await self._failed(error, backoff)

    async def send(self, batch: Sequence[Record]) -> list[int]:
        """Deliver ``batch``; returns the indexes of the records the backend refused (dropped)."""
        parts: deque[list[int]] = deque([list(range(len(batch)))])  # not yet stored, in order
        refused: list[int] = []
        backoff = Backoff(base=min(0.5, self._cap), cap=self._cap)
        while parts:
            await self.connect()
            part = parts[0]
            records = [batch[i] for i in part]
            error = await self._attempt(functools.partial(self._lane.exporter.export, records), "export")
            if error is None:
                parts.popleft()
                self._metrics.export_success.labels(self._lane.name).inc(len(part))
                self._answered()
                backoff.reset()
                continue
            if not isinstance(error, RecordError):
                await self._failed(error, backoff)
                continue
            self._metrics.export_failure.labels(self._lane.name).inc()
            self._answered()  # the backend answered: it is reachable and configured
            parts.popleft()
            named = sorted({i for i in error.indexes if 0 <= i < len(part)})
            if named or len(part) == 1:
                bad = {part[i] for i in named} if named else set(part)
                self._refuse([batch[i] for i in sorted(bad)], error)
                refused += bad
                if rest := [p for p in part if p not in bad]:
                    parts.appendleft(rest)
            else:  # the backend cannot say which: halve until the refused records stand alone
                middle = len(part) // 2
                parts.extendleft([part[middle:], part[:middle]])
        return sorted(refused)

    async def _attempt(self, call: Callable[[], Awaitable[None]], what: str) -> ExportError | None:
        """One ``open``/``export`` under the lane's deadline: None on success, else its error."""
        timer = asyncio.timeout(self.deadline)
        started = asyncio.get_running_loop().time()
        try:
            async with timer:
                await call()
        except ExportError as e:
            return e
        except Exception as e:  # a bug in a backend client must not stop delivery: transient
            name = self._lane.name
            if timer.expired():
                log.error("export attempt stalled", exporter=name, call=what, deadline=self.deadline)
                return ExportError(f"{name}: no answer within {self.deadline:g}s (stalled)")
            log.exception("exporter raised an unexpected error", exporter=name, call=what)
            return ExportError(f"{type(e).__name__}: {e}")
        finally:
            if what == "export":
                elapsed = asyncio.get_running_loop().time() - started
                self._metrics.export_duration.labels(self._lane.name).observe(elapsed)
        return None

    def _answered(self) -> None:
        lane = self._lane
        if lane.parked_since is not None:
            parked = asyncio.get_running_loop().time() - lane.parked_since
            log.info("exporter resumed", exporter=lane.name, parked_seconds=round(parked, 1))
            lane.parked_since = None
        self._set_up(True)

    async def _failed(self, error: ExportError, backoff: Backoff) -> None:
        """Report a failed attempt and wait before the next one: briefly if transient, long if parked."""
        lane = self._lane
        self._metrics.export_failure.labels(lane.name).inc()
        self._set_up(False)
        if isinstance(error, LaneError) or not error.transient:
            delay = Backoff(base=2 * self._cap, cap=2 * self._cap).next_delay()  # one cap to two
            if lane.parked_since is None:
                lane.parked_since = asyncio.get_running_loop().time()
                log.error(
                    "exporter parked",
                    exporter=lane.name,
                    error=str(error),
                    waiting=lane.waiting(),
                    retry_every=f"{self._cap:g}-{2 * self._cap:g}s",
                    note="records are kept and sent once the backend accepts them",
                )
            else:
                log.debug("exporter still parked", exporter=lane.name, error=str(error))
        else:
            delay = backoff.next_delay()
            log.warning(
                "export failed, will retry", exporter=lane.name, error=str(error), retry_in=round(delay, 2)
            )
        await asyncio.sleep(delay)

    def _refuse(self, records: Sequence[Record], error: RecordError) -> None:
        self._metrics.export_dropped.labels(self._lane.name, "rejected").inc(len(records))
        for r in records:
            log.error(
                "record refused by the backend, dropped",
                exporter=self._lane.name,
                node=r.node,
                pod=r.source if isinstance(r, GPUReading) else None,
                gpu_uuid=r.gpu_uuid,
                error=str(error),
            )
