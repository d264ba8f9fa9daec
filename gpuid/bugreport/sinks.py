"""Where bug reports go: the destination contract, and a local directory with retention.

A destination opens one writer per report; the collector streams chunks
into every writer, then commits them all or aborts them all, so a report
is either complete and verified everywhere or nowhere. The local directory
(a hostPath or PVC) writes ``<dir>/<node>/.<file>.partial`` in 1 MiB pieces
off the event loop, fsyncs, renames it into place (readers never see a
partial file) and then keeps only the newest ``MAX_LOGS_TO_KEEP`` reports
of that node.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import IO, Protocol

import structlog

from gpuid.errors import ExportError

log = structlog.get_logger("gpuid.bugreport")
FLUSH_BYTES = 1024 * 1024
REPORT_GLOB = "nvidia-bug-report-*.gz"


class ReportWriter(Protocol):
    location: str  # where the committed report is: a path, or s3://bucket/key

    async def write(self, chunk: memoryview) -> None: ...

    async def commit(self) -> None:
        """Make the report visible; called once, after every chunk was written and verified."""

    async def abort(self) -> None:
        """Discard what was written; safe after commit (then it does nothing) and repeatable."""


class Destination(Protocol):
    name: str

    async def open(self, node: str, file_name: str, *, size: int, sha256: str) -> ReportWriter: ...


class LocalDirectory:
    """Reports under ``<root>/<node>/``, at most ``keep`` per node."""

    name = "local"

    def __init__(self, root: Path, keep: int) -> None:
        self.root = root
        self.keep = keep

    def node_dir(self, node: str) -> Path:
        if not node or "/" in node or node in (".", ".."):
            raise ExportError(f"not a node name: {node!r}", transient=False)
        return self.root / node

    async def open(self, node: str, file_name: str, *, size: int, sha256: str) -> ReportWriter:
        directory = self.node_dir(node)
        try:
            await asyncio.to_thread(_prepare, directory)
            temp = directory / f".{file_name}.partial"
            handle = await asyncio.to_thread(temp.open, "wb")
        except OSError as e:
            raise ExportError(f"bug report directory {directory}: {e}", transient=True) from e
        return _LocalWriter(self, handle, temp, directory / file_name)

    def prune(self, directory: Path) -> list[Path]:
        """Remove all but the newest ``keep`` reports in ``directory``; returns the removed paths."""
        reports = sorted(directory.glob(REPORT_GLOB), key=lambda p: (p.stat().st_mtime_ns, p.name))
        removed = reports[: max(0, len(reports) - self.keep)]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed


def _prepare(directory: Path) -> None:
    """Create the node's directory; remove partial files a crash left behind (one collection per node)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".*.partial"):
        stale.unlink(missing_ok=True)


class _LocalWriter:
    def __init__(self, owner: LocalDirectory, handle: IO[bytes], temp: Path, final: Path) -> None:
        self._owner = owner
        self._handle = handle
        self._temp = temp
        self._final = final
        self._buffer = bytearray()
        self._done = False
        self.location = str(final)

    async def write(self, chunk: memoryview) -> None:
        self._buffer += chunk
        if len(self._buffer) >= FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            await asyncio.to_thread(self._handle.write, data)
        except OSError as e:
            raise ExportError(f"writing {self._temp}: {e}", transient=True) from e

    async def commit(self) -> None:
        await self._flush()
        try:
            await asyncio.to_thread(self._finish)
        except OSError as e:
            raise ExportError(f"storing {self._final}: {e}", transient=True) from e
        self._done = True
        removed = await asyncio.to_thread(self._owner.prune, self._final.parent)
        if removed:
            log.info("old bug reports removed", files=[p.name for p in removed], keep=self._owner.keep)

    def _finish(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._temp, self._final)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        self._handle.close()
        self._temp.unlink(missing_ok=True)
