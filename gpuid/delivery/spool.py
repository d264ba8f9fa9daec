"""On-disk spool: records a backend has not acknowledged survive a restart.

With ``SPOOL_DIR`` set, delivery appends every group of submitted records to
its exporter's spool *before* queueing it (a write-ahead log), and deletes a
segment once all its records are acknowledged (delivered, or refused by the
backend and counted). A restart — SIGTERM with a backend down, an OOM kill, a
crash — replays what is left, oldest first. The in-memory queue holds only a
window of the spool, so a long outage costs disk, bounded by
``SPOOL_MAX_BYTES`` per exporter, not memory.

Segments are append-only JSON-lines files (``gpuid.delivery.segment``), rolled
every ``segment_records`` records or ``ROLL_BYTES``, so a steady trickle costs
one ``write`` per submit, not a file. Delivery is at-least-once: a segment
acknowledged only in part when the process stopped is replayed whole, which
the exporters absorb. Nothing is fsync'ed: a power loss can lose the page cache.

A damaged spool never takes the service down: a segment that cannot be read
back (not a regular file, too big, an unknown header) is renamed ``*.corrupt``
and the rest goes on; a bad line costs that line; a lane whose directory is
unusable runs without a spool. Each is counted (``gpuid_spool_errors_total``,
and the records in ``gpuid_export_dropped_total{reason="spool_corrupt"}``) and
logged once. Set-aside files count toward the exporter's budget and are the
first thing deleted, oldest first, when new records need the room.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

import structlog

from gpuid.delivery.spoollane import SpoolLane
from gpuid.errors import ConfigError
from gpuid.metrics import Metrics

log = structlog.get_logger("gpuid.delivery.spool")


class Spool:
    """The spool root: a directory and a byte budget per exporter (a dead one cannot starve the rest)."""

    def __init__(self, root: Path, max_bytes: int, segment_records: int = 1000, *, metrics: Metrics) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.segment_records = segment_records
        self.metrics = metrics
        self._lanes: list[SpoolLane] = []
        self._lock: int | None = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            lock = os.open(root / ".lock", flags, 0o600)
        except OSError as e:
            log.error("spool directory unusable, running without a spool", dir=str(root), error=e.strerror)
            return
        try:
            if not stat.S_ISREG(os.fstat(lock).st_mode):
                raise OSError(errno.EINVAL, "the lock file is not a regular file")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(lock)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ConfigError(f"SPOOL_DIR={str(root)!r} is in use by another gpuid process") from None
            log.error("spool directory unusable, running without a spool", dir=str(root), error=e.strerror)
            return
        self._lock = lock

    @property
    def used(self) -> int:
        """Bytes on disk, every exporter's together."""
        return sum(lane.bytes for lane in self._lanes)

    def lane(self, name: str) -> SpoolLane | None:
        """The spool of exporter ``name``; None (counted, logged) when it cannot have one."""
        lane = None
        if self._lock is not None:
            lane = SpoolLane(self.root / name, name, self.max_bytes, self.segment_records, self.metrics)
        if lane is None or not lane.usable:
            self.metrics.spool_errors.labels(name, "unusable").inc()
            return None
        self._lanes.append(lane)
        return lane

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
