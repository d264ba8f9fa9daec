"""On-disk spool: records a backend has not acknowledged survive a restart.

With ``SPOOL_DIR`` set, delivery appends every group of submitted records to
its exporter's spool *before* queueing it (a write-ahead log), and deletes a
segment once all its records are acknowledged (delivered, or given up on and
counted). A restart — SIGTERM with a backend down, an OOM kill, a crash —
replays what is left, oldest first. The in-memory queue holds only a window
of the spool, so a long outage costs disk, bounded by ``SPOOL_MAX_BYTES``,
not memory.

Segments are append-only JSON-lines files, rolled every ``segment_records``
records, so a steady trickle costs one ``write`` per submit, not a file.
Delivery is at-least-once: a segment acknowledged only in part when the
process stopped is replayed whole, which the exporters absorb (idempotent
keys in PostgreSQL, content-addressed objects in S3). A torn last line from
a crash is ignored. Nothing is fsync'ed: a power loss can lose the page cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gpuid.errors import ConfigError, SpoolCorruptError
from gpuid.records import (
    CHANGE_FIELD_NAMES,
    FIELD_NAMES,
    SCHEMA_VERSION,
    GpuChange,
    GPUReading,
    MigDevice,
    Record,
    record_json,
)

_SEGMENT = re.compile(r"^(\d{16})\.jsonl$")


@dataclass
class Segment:
    path: Path
    count: int
    size: int
    acked: int = 0
    file: BinaryIO | None = None  # open while records are still appended to it

    def seal(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def reading_from_dict(data: dict[str, Any]) -> Record:
    """Inverse of ``record_dict``: a change when ``event`` says so, else a reading; unknown keys ignored."""
    if data.get("event") == GpuChange.EVENT:
        change: dict[str, Any] = {name: data.get(name) for name in CHANGE_FIELD_NAMES}
        for required in ("cluster", "node", "change", "gpu_uuid", "observed_at"):
            if not isinstance(change[required], str):
                raise SpoolCorruptError(f"gpu_changed record without {required}")
        return GpuChange(**change)
    values: dict[str, Any] = {name: data.get(name) for name in FIELD_NAMES}
    for required in ("cluster", "node", "source", "pod_uid", "gpu_uuid", "observed_at"):
        if not isinstance(values[required], str):
            raise SpoolCorruptError(f"record without {required}")
    values["mig_devices"] = tuple(MigDevice(**m) for m in values["mig_devices"] or ())
    return GPUReading(**values)


class Spool:
    """The spool root: a directory and a byte budget per exporter (a dead one cannot starve the rest)."""

    def __init__(self, root: Path, max_bytes: int, segment_records: int = 1000) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.segment_records = segment_records
        self._lanes: list[SpoolLane] = []
        self.used = 0
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._lock = (root / ".lock").open("w")
        except OSError as e:
            raise ConfigError(f"SPOOL_DIR={str(root)!r} is not usable: {e.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise ConfigError(f"SPOOL_DIR={str(root)!r} is in use by another gpuid process") from None

    def lane(self, name: str) -> SpoolLane:
        lane = SpoolLane(self, self.root / name)
        self._lanes.append(lane)
        return lane

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()
        self._lock.close()


class SpoolLane:
    """One exporter's segments, oldest first: ``loaded`` ones are also in memory, then ``waiting``."""

    def __init__(self, spool: Spool, directory: Path) -> None:
        self._spool = spool
        self.dir = directory
        self.loaded: deque[Segment] = deque()
        self.waiting: deque[Segment] = deque()
        self.bytes = 0
        self.unloaded_records = 0
        self._seq = 0
        try:
            directory.mkdir(exist_ok=True)
            self._recover()
        except OSError as e:
            raise ConfigError(f"SPOOL_DIR: {str(directory)!r} is not usable: {e.strerror}") from None

    def _recover(self) -> None:
        found = sorted((int(m.group(1)), p) for p in self.dir.iterdir() if (m := _SEGMENT.match(p.name)))
        for seq, path in found:
            self._seq = seq + 1
            data = path.read_bytes()
            count = data.count(b"\n") - 1  # complete lines after the header
            if count < 1:
                path.unlink()  # created, never written to
                continue
            self._add(Segment(path, count, len(data)), loaded=False)

    def _add(self, segment: Segment, *, loaded: bool) -> None:
        (self.loaded if loaded else self.waiting).append(segment)
        self.bytes += segment.size
        self._spool.used += segment.size
        self.unloaded_records += 0 if loaded else segment.count

    def _forget(self, segment: Segment) -> None:
        segment.seal()
        self.bytes -= segment.size
        self._spool.used -= segment.size

    @property
    def segments(self) -> int:
        return len(self.loaded) + len(self.waiting)

    def has_unloaded(self) -> bool:
        return bool(self.waiting)

    def _active(self, *, loaded: bool) -> Segment:
        """The open segment to append to, in the right state; a new one when needed."""
        tail = self.waiting[-1] if self.waiting else self.loaded[-1] if self.loaded else None
        same_state = bool(self.waiting) != loaded  # the tail is in memory exactly when nothing waits
        room = tail is not None and tail.count < self._spool.segment_records
        if tail is not None and tail.file is not None and same_state and room:
            return tail
        if tail is not None:
            tail.seal()
        path = self.dir / f"{self._seq:016d}.jsonl"
        self._seq += 1
        header = json.dumps({"gpuid_spool": 1, "schema_version": SCHEMA_VERSION}).encode() + b"\n"
        segment = Segment(path, 0, 0, file=path.open("ab", buffering=0))
        self._add(segment, loaded=loaded)
        self._write(segment, header, 0, loaded=loaded)
        return segment

    def _write(self, segment: Segment, data: bytes, count: int, *, loaded: bool) -> None:
        assert segment.file is not None
        segment.file.write(data)
        segment.count += count
        segment.size += len(data)
        self.bytes += len(data)
        self._spool.used += len(data)
        self.unloaded_records += 0 if loaded else count

    def append(self, readings: Sequence[Record], *, loaded: bool) -> bool:
        """Append ``readings`` to the log; False (nothing written) when the budget is spent."""
        if loaded and self.waiting:
            raise RuntimeError("spool order: records go to memory only when nothing older waits on disk")
        data = "".join(record_json(r) + "\n" for r in readings).encode()
        if self.bytes + len(data) + 64 > self._spool.max_bytes:
            return False
        self._write(self._active(loaded=loaded), data, len(readings), loaded=loaded)
        return True

    def next_unloaded(self) -> Segment | None:
        return self.waiting[0] if self.waiting else None

    def load_next(self) -> list[Record]:
        """Read the oldest segment not yet in memory; ``SpoolCorruptError`` if it is unreadable."""
        segment = self.waiting[0]
        segment.seal()  # from now on it is in memory: new records go to a new segment
        try:
            lines = segment.path.read_bytes().split(b"\n")[1:-1]  # header, then complete lines only
            records = [reading_from_dict(json.loads(line)) for line in lines]
        except (OSError, ValueError, TypeError, SpoolCorruptError) as e:
            raise SpoolCorruptError(f"{segment.path.name}: {e}") from e
        if len(records) != segment.count:
            raise SpoolCorruptError(f"{segment.path.name}: {len(records)} records, expected {segment.count}")
        self.loaded.append(self.waiting.popleft())
        self.unloaded_records -= segment.count
        return records

    def discard_next(self) -> int:
        """Set the oldest unloaded segment aside as ``*.corrupt``; returns its record count."""
        segment = self.waiting.popleft()
        self.unloaded_records -= segment.count
        self._forget(segment)
        segment.path.replace(segment.path.with_suffix(".corrupt"))
        return segment.count

    def ack(self, count: int) -> None:
        """The oldest ``count`` loaded records are done with: delete segments that are complete."""
        while count > 0 and self.loaded:
            head = self.loaded[0]
            take = min(count, head.count - head.acked)
            head.acked += take
            count -= take
            if head.acked == head.count:
                self.loaded.popleft()
                self._forget(head)
                with contextlib.suppress(OSError):  # left behind, it is replayed once more: harmless
                    head.path.unlink()

    def close(self) -> None:
        for segment in (*self.loaded, *self.waiting):
            segment.seal()
