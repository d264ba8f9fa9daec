"""One exporter's spool (``gpuid.delivery.spool``): its segments in order, its budget, its read-back.

Segments are oldest first: ``loaded`` ones are also in memory, then the
``waiting`` ones, read back as memory frees up. Start-up recovers whatever
the last process left, setting aside what cannot be read (``SetAside``);
appends are whole or nothing (``SegmentWriter``), and a segment is deleted
once every record in it has been acknowledged.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import structlog

from gpuid.delivery.segment import (
    HEADER,
    MAX_SEGMENT_BYTES,
    ROLL_BYTES,
    SEGMENT_NAME,
    SET_ASIDE_NAME,
    Segment,
    SegmentWriter,
    check_header,
    count_entries,
    decode_entries,
    read_segment,
)
from gpuid.delivery.setaside import SetAside
from gpuid.errors import SpoolCorruptError
from gpuid.metrics import Metrics
from gpuid.records import Record, record_json

log = structlog.get_logger("gpuid.delivery.spool")


class SpoolLane:
    """One exporter's segments, oldest first: ``loaded`` ones are also in memory, then ``waiting``."""

    def __init__(
        self, directory: Path, exporter: str, max_bytes: int, segment_records: int, metrics: Metrics
    ) -> None:
        self._max_bytes = max_bytes
        self._segment_records = segment_records
        self._metrics = metrics
        self.dir = directory
        self.exporter = exporter
        self.loaded: deque[Segment] = deque()
        self.waiting: deque[Segment] = deque()
        self.set_aside = SetAside(exporter, self._metrics)
        self._segment_bytes = 0
        self.unloaded_records = 0
        self.usable = True
        self._seq = 0
        try:
            directory.mkdir(exist_ok=True)
            with os.scandir(directory) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as e:
            log.error("spool unusable, this exporter runs without one", exporter=exporter, error=str(e))
            self.usable = False
            return
        self._recover(names)

    def _recover(self, names: list[str]) -> None:
        for name in names:  # sixteen-digit names: sorted is oldest first
            path = self.dir / name
            if SET_ASIDE_NAME.match(name):
                self.set_aside.track(path)
            elif match := SEGMENT_NAME.match(name):
                self._seq = max(self._seq, int(match.group(1)) + 1)
                try:
                    data = read_segment(path)
                except SpoolCorruptError as e:
                    self.set_aside.put(path, str(e), lost=0)  # not a file we wrote: no records of ours
                    continue
                try:
                    check_header(data)
                except SpoolCorruptError as e:
                    self.set_aside.put(path, str(e), lost=count_entries(data))
                    continue
                if count := count_entries(data):
                    self._add(Segment(path, count, len(data)), loaded=False)
                else:
                    with contextlib.suppress(OSError):
                        path.unlink()  # created, never written to

    @property
    def bytes(self) -> int:
        """What this exporter's spool takes on disk: its segments and its set-aside files."""
        return self._segment_bytes + self.set_aside.bytes

    def _add(self, segment: Segment, *, loaded: bool) -> None:
        (self.loaded if loaded else self.waiting).append(segment)
        self._segment_bytes += segment.size
        self.unloaded_records += 0 if loaded else segment.count

    def _forget(self, segment: Segment) -> None:
        segment.seal()
        self._segment_bytes -= segment.size

    @property
    def segments(self) -> int:
        return len(self.loaded) + len(self.waiting)

    def has_unloaded(self) -> bool:
        return bool(self.waiting)

    def _active(self, *, loaded: bool, adding: int) -> Segment:
        """The open segment to append ``adding`` bytes to, in the right state; a new one when needed."""
        tail = self.waiting[-1] if self.waiting else self.loaded[-1] if self.loaded else None
        if tail is not None and tail.writer is not None:
            same_state = bool(self.waiting) != loaded  # the tail is in memory exactly when nothing waits
            room = tail.count < self._segment_records and tail.size + adding <= ROLL_BYTES
            if same_state and room:
                return tail
            tail.seal()
        while True:
            path = self.dir / f"{self._seq:016d}.jsonl"
            self._seq += 1
            try:
                writer = SegmentWriter(path)
            except FileExistsError:
                continue  # something else took the name: the next one
            break
        try:
            writer.append(HEADER)
        except OSError:
            writer.close()
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        segment = Segment(path, 0, len(HEADER), writer=writer)
        self._add(segment, loaded=loaded)
        return segment

    def append(self, readings: Sequence[Record], *, loaded: bool) -> bool:
        """Append ``readings``; False (nothing written) when the budget is spent.

        ``OSError`` (the disk is full, a short write) leaves the spool as it was.
        """
        if loaded and self.waiting:
            raise RuntimeError("spool order: records go to memory only when nothing older waits on disk")
        data = "".join(record_json(r) + "\n" for r in readings).encode()
        needed = len(data) + len(HEADER)  # room for a new segment's header too
        budget = self._max_bytes
        if self.bytes + needed > budget:
            self.set_aside.free(self.bytes + needed - budget)
        if needed > MAX_SEGMENT_BYTES or self.bytes + needed > budget:
            return False
        try:
            segment = self._active(loaded=loaded, adding=len(data))
            assert segment.writer is not None
            try:
                segment.writer.append(data)
            except OSError:
                segment.seal()  # EFBIG, or a tail the rollback could not cut: go on in a new segment
                raise
        except OSError:
            self._metrics.spool_errors.labels(self.exporter, "write_failed").inc()
            raise
        segment.count += len(readings)
        segment.size += len(data)
        self._segment_bytes += len(data)
        self.unloaded_records += 0 if loaded else len(readings)
        return True

    def next_unloaded(self) -> Segment | None:
        return self.waiting[0] if self.waiting else None

    def load_next(self) -> tuple[list[Record], int]:
        """Read back the oldest segment not in memory: its records, and how many of its records are lost.

        Never raises: a segment that cannot be read is set aside, a bad line skipped; both counted.
        """
        segment = self.waiting.popleft()
        segment.seal()  # from now on it is in memory: new records go to a new segment
        self.unloaded_records -= segment.count
        try:
            records, bad = decode_entries(read_segment(segment.path))
        except SpoolCorruptError as e:
            self._forget(segment)
            self.set_aside.put(segment.path, str(e), lost=segment.count)
            return [], segment.count
        lost = max(0, segment.count - len(records))
        if bad:
            self._metrics.spool_errors.labels(self.exporter, "bad_line").inc(len(bad))
            self._metrics.export_dropped.labels(self.exporter, "spool_corrupt").inc(lost)
            log.error(
                "spool lines skipped",
                exporter=self.exporter,
                file=segment.path.name,
                lines=len(bad),
                records=lost,
                error=bad[0],
            )
        segment.count = len(records)
        self.loaded.append(segment)
        if not records:
            self.ack(0)  # nothing of it to deliver: gone now
        return records, lost

    def ack(self, count: int) -> None:
        """The oldest ``count`` loaded records are done with: delete segments that are complete."""
        while self.loaded:
            head = self.loaded[0]
            take = min(count, head.count - head.acked)
            head.acked += take
            count -= take
            if head.acked < head.count:
                return
            self.loaded.popleft()
            self._forget(head)
            with contextlib.suppress(OSError):  # left behind, it is replayed once more: harmless
                head.path.unlink()

    def close(self) -> None:
        for segment in (*self.loaded, *self.waiting):
            segment.seal()
