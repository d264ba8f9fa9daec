"""One exporter's lane in ``gpuid.delivery.delivery``: its queue, its state and its running counts.

A lane is a FIFO. Counted in records, position ``p`` is the ``p``-th record
the lane ever accepted (those dropped on arrival never get one), and records
leave in that order, delivered or lost. ``gpuid.scan.handover`` reads these
positions to tell when a pod's records have all been delivered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple

from gpuid.delivery.spoollane import SpoolLane
from gpuid.exporters import Exporter
from gpuid.records import Record


class Tally(NamedTuple):
    """A lane's running counts, as positions in its FIFO."""

    accepted: int  # records that ever entered it
    left: int  # records that left it, in order: delivered or lost
    lost_through: int  # every record lost so far was before this position (0: none lost)


class Lane:
    """The queue and state of one exporter."""

    def __init__(self, exporter: Exporter, spool: SpoolLane | None, batch_size: int) -> None:
        self.exporter = exporter
        self.name = exporter.name
        self.batch_size = batch_size  # EXPORT_BATCH_SIZE, or the exporter's own (POSTGRES_BATCH_SIZE)
        self.spool = spool
        self.pending: deque[Record] = deque()  # oldest first; the batch in flight is its head
        self.batch: list[Record] = []
        self.wakeup = asyncio.Event()
        self.opened = False
        self.up = False  # gpuid_exporter_up: opened, and its last attempt succeeded
        self.parked_since: float | None = None  # loop time of the lane error that parked it
        self.dropping = False  # log a drop episode once, count every record
        self.left = self.lost_through = 0  # see Tally

    def waiting(self) -> int:
        return len(self.pending) + (self.spool.unloaded_records if self.spool else 0)

    def tally(self) -> Tally:
        return Tally(self.left + self.waiting(), self.left, self.lost_through)

    def leave(self, count: int, lost: list[int]) -> None:
        """The oldest ``count`` records left the lane; ``lost`` are indexes among them that were dropped."""
        if lost:
            self.lost_through = max(self.lost_through, self.left + max(lost) + 1)
        for _ in range(count):
            self.pending.popleft()
        self.left += count
        if self.spool is not None:
            self.spool.ack(count)
        self.batch = []
