"""Where a spool's damaged files go: renamed ``*.corrupt``, counted, logged once, kept while there is room.

A segment gpuid cannot read back is evidence worth keeping (what damaged
it?), but never at the cost of new records: set-aside files count toward
their exporter's ``SPOOL_MAX_BYTES`` and are the first thing deleted, oldest
first, when new records need the room. Only regular files are counted or
deleted; a directory or FIFO that was set aside is renamed and left alone.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import deque
from pathlib import Path

import structlog

from gpuid.metrics import Metrics

log = structlog.get_logger("gpuid.delivery.spool")


class SetAside:
    """One exporter's set-aside files, oldest first, and the bytes they take."""

    def __init__(self, exporter: str, metrics: Metrics) -> None:
        self.exporter = exporter
        self._metrics = metrics
        self.files: deque[tuple[Path, int]] = deque()
        self.bytes = 0

    def track(self, path: Path) -> None:
        """Count a file set aside earlier (or just now) toward the budget, if it is a regular file."""
        with contextlib.suppress(OSError):
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                self.files.append((path, info.st_size))
                self.bytes += info.st_size

    def put(self, path: Path, why: str, *, lost: int) -> None:
        """Rename the unusable segment at ``path`` ``*.corrupt``; count it and its ``lost`` records."""
        target = path.with_suffix(".corrupt")
        for tracked in [t for t in self.files if t[0] == target]:  # replaced below
            self.files.remove(tracked)
            self.bytes -= tracked[1]
        try:
            os.replace(path, target)
        except OSError as e:
            why = f"{why}; cannot rename it, ignored: {e.strerror}"
        else:
            self.track(target)
        self._metrics.spool_errors.labels(self.exporter, "set_aside").inc()
        self._metrics.export_dropped.labels(self.exporter, "spool_corrupt").inc(lost)
        log.error("spool segment set aside", exporter=self.exporter, file=path.name, error=why, records=lost)

    def free(self, needed: int) -> None:
        """Delete set-aside files, oldest first, until ``needed`` bytes are freed or none is left."""
        freed = 0
        while freed < needed and self.files:
            path, size = self.files.popleft()
            with contextlib.suppress(OSError):
                path.unlink()
            self.bytes -= size
            freed += size
            log.warning("set-aside spool file deleted to make room", exporter=self.exporter, file=path.name)
