"""The default exporter: one compact JSON line per GPU on stdout.

stdout carries records only (logs go to stderr), so ``gpuid | jq`` sees one
``{"event": "gpu_reading", ...}`` object per GPU, and one
``{"event": "gpu_changed", ...}`` per change of a node's GPUs, and nothing else.

A reader that has gone away (EPIPE, a closed or invalid stream) is a *lane*
error: the records stay queued (and spooled) and the lane retries slowly,
since a restarted log collector may come back. Any other write error
(EAGAIN on a non-blocking pipe, ENOSPC when redirected to a file) is transient.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence
from typing import TextIO

from gpuid.errors import ExportError, LaneError
from gpuid.exporters import ExporterSettings
from gpuid.records import Record


class StdoutExporter:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @classmethod
    def from_settings(cls, settings: ExporterSettings) -> StdoutExporter:
        return cls()

    async def open(self) -> None:
        return None

    async def export(self, batch: Sequence[Record]) -> None:
        stream = self._stream or sys.stdout
        text = "".join(r.to_json(event=r.EVENT) + "\n" for r in batch)
        try:
            stream.write(text)
            stream.flush()
        except ValueError as e:  # "I/O operation on closed file"
            raise LaneError(f"stdout is closed: {e}") from e
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.EBADF, errno.ECONNRESET):
                raise LaneError(f"stdout has no reader: {e}") from e
            raise ExportError(f"stdout write failed: {e}") from e

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        return None
