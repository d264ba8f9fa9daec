"""On-disk spool: records a backend has not acknowledged survive a restart.

With ``SPOOL_DIR`` set, delivery writes every group of submitted records to
each exporter's spool directory *before* queueing it (a write-ahead log), and
deletes a segment once all its records are acknowledged (delivered, or given
up on and counted). A restart — SIGTERM with a backend down, an OOM kill, a
crash — replays what is left, oldest first. The in-memory queue holds only a
window of the spool, so a long outage costs disk, bounded by
``SPOOL_MAX_BYTES``, not memory.

Delivery is at-least-once: a segment acknowledged only in part when the
process stopped is replayed whole. The exporters absorb that (idempotent keys
in PostgreSQL, content-addressed objects in S3). Segments are written to a
temp file and renamed, so a crash never leaves half a segment; they are not
fsync'ed, so a power loss of the node can lose the page cache.
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
from typing import Any

from gpuid.errors import ConfigError, GpuidError
from gpuid.records import FIELD_NAMES, SCHEMA_VERSION, GPUReading, MigDevice

_SEGMENT = re.compile(r"^(\d{16})-(\d+)\.jsonl$")


class SpoolCorruptError(GpuidError):
    """A segment on disk could not be read back into records."""


@dataclass
class Segment:
    path: Path
    count: int
    size: int
    acked: int = 0


def reading_from_dict(data: dict[str, Any]) -> GPUReading:
    """Inverse of ``GPUReading.to_dict``; unknown keys (a newer schema) are ignored."""
    values: dict[str, Any] = {name: data.get(name) for name in FIELD_NAMES}
    for required in ("cluster", "node", "source", "pod_uid", "gpu_uuid", "observed_at"):
        if not isinstance(values[required], str):
            raise SpoolCorruptError(f"record without {required}")
    values["mig_devices"] = tuple(MigDevice(**m) for m in values["mig_devices"] or ())
    return GPUReading(**values)


class Spool:
    """The spool root: one directory per exporter, one byte budget for all of them."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
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
        return SpoolLane(self, self.root / name)

    def close(self) -> None:
        self._lock.close()


class SpoolLane:
    """The segments of one exporter, oldest first: ``loaded`` ones are also in memory, then ``waiting``."""

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
        found: list[tuple[int, Segment]] = []
        for path in self.dir.iterdir():
            if path.suffix == ".tmp":
                path.unlink()  # a write the previous process did not finish
            elif m := _SEGMENT.match(path.name):
                found.append((int(m.group(1)), Segment(path, int(m.group(2)), path.stat().st_size)))
        for seq, segment in sorted(found, key=lambda item: item[0]):
            self._add(segment, loaded=False)
            self._seq = seq + 1

    def _add(self, segment: Segment, *, loaded: bool) -> None:
        (self.loaded if loaded else self.waiting).append(segment)
        self.bytes += segment.size
        self._spool.used += segment.size
        self.unloaded_records += 0 if loaded else segment.count

    def _forget(self, segment: Segment) -> None:
        self.bytes -= segment.size
        self._spool.used -= segment.size

    @property
    def segments(self) -> int:
        return len(self.loaded) + len(self.waiting)

    def has_unloaded(self) -> bool:
        return bool(self.waiting)

    def append(self, readings: Sequence[GPUReading], *, loaded: bool) -> bool:
        """Write ``readings`` as one segment; False (nothing written) when the budget is spent."""
        if loaded and self.waiting:
            raise RuntimeError("spool order: records go to memory only when nothing older waits on disk")
        header = json.dumps({"gpuid_spool": 1, "schema_version": SCHEMA_VERSION, "count": len(readings)})
        body = "\n".join([header, *(r.to_json() for r in readings)]).encode() + b"\n"
        if self._spool.used + len(body) > self._spool.max_bytes:
            return False
        path = self.dir / f"{self._seq:016d}-{len(readings)}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(body)
        tmp.replace(path)
        self._seq += 1
        self._add(Segment(path, len(readings), len(body)), loaded=loaded)
        return True

    def next_unloaded(self) -> Segment | None:
        return self.waiting[0] if self.waiting else None

    def load_next(self) -> list[GPUReading]:
        """Read the oldest segment not yet in memory; ``SpoolCorruptError`` if it is unreadable."""
        segment = self.waiting[0]
        try:
            lines = segment.path.read_text().splitlines()
            records = [reading_from_dict(json.loads(line)) for line in lines[1:] if line]
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
                with contextlib.suppress(OSError):  # left behind, it is replayed once more: harmless
                    head.path.unlink()
                self.loaded.popleft()
                self._forget(head)
