"""Where bug reports go: the destination contract, and a local directory with retention.

A destination opens one writer per report; the collector streams chunks
into every writer, then commits them all or aborts them all, so a report
is either complete and verified everywhere or nowhere. The local directory
(a hostPath or PVC) writes ``<dir>/<node>/.<file>.partial`` in 1 MiB pieces
off the event loop, fsyncs, renames it into place (readers never see a
partial file) and then keeps only the newest ``MAX_LOGS_TO_KEEP`` reports
of that node.

The directory is shared with whoever else can write to the volume, so it is
handled like input: every path is opened relative to a directory file
descriptor and never through a symbolic link (a node directory that is a
link is refused; retention only counts and removes regular files), nothing
outside ``BUG_REPORT_DIR`` is touched, a report that does not fit in the
free space is refused before a byte is written, and every ``OSError``
becomes an ``ExportError`` for the collector to report (counted as
``gpuid_bug_report_errors_total{stage="storage"}`` and logged with the
node); a full disk says so. Retention failing never fails a stored report.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import os
import stat
from pathlib import Path
from typing import IO, Protocol

import structlog

from gpuid.errors import ExportError
from gpuid.metrics import Metrics

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

    def __init__(self, root: Path, keep: int, *, metrics: Metrics | None = None) -> None:
        self.root = root
        self.keep = keep
        self._metrics = metrics

    def node_dir(self, node: str) -> Path:
        if not node or "/" in node or "\0" in node or node in (".", ".."):
            raise ExportError(f"not a node name: {node!r}", transient=False)
        return self.root / node

    def failed(self, node: str, action: str, error: OSError) -> ExportError:
        """Count and log a storage failure; the error for the collector (a full disk says so)."""
        if self._metrics is not None:
            self._metrics.bug_report_errors.labels("storage").inc()
        what = describe(error)
        log.error("bug report storage failed", node=node, action=action, directory=str(self.root), error=what)
        return ExportError(f"bug report storage {self.node_dir(node)}: {action}: {what}", transient=True)

    async def open(self, node: str, file_name: str, *, size: int, sha256: str) -> ReportWriter:
        self.node_dir(node)
        if "/" in file_name or file_name.startswith("."):
            raise ExportError(f"not a report file name: {file_name!r}", transient=False)
        try:
            node_fd, handle, temp = await asyncio.to_thread(self._open, node, file_name, size)
        except OSError as e:
            raise self.failed(node, "open", e) from None
        return _LocalWriter(self, node, node_fd=node_fd, handle=handle, temp=temp, final=file_name)

    def _open(self, node: str, file_name: str, size: int) -> tuple[int, IO[bytes], str]:
        os.makedirs(self.root, exist_ok=True)  # BUG_REPORT_DIR itself is the operator's choice
        root_fd = os.open(self.root, _DIRECTORY)
        try:
            space = os.fstatvfs(root_fd)
            free = space.f_bavail * space.f_frsize
            if size > free:
                raise OSError(errno.ENOSPC, f"the report is {size} bytes, {free} bytes are free")
            with contextlib.suppress(FileExistsError):
                os.mkdir(node, 0o750, dir_fd=root_fd)
            node_fd = _open_directory(node, root_fd)
        finally:
            os.close(root_fd)
        try:
            _remove_partials(node_fd)  # one collection per node: what is there, a crash left
            temp = f".{file_name}.partial"
            fd = os.open(temp, _NEW_FILE, 0o640, dir_fd=node_fd)
            return node_fd, os.fdopen(fd, "wb"), temp
        except BaseException:
            os.close(node_fd)
            raise

    def prune(self, node: str, node_fd: int) -> list[str]:
        """Remove all but the newest ``keep`` reports of ``node``; the names removed. Never raises."""
        try:
            reports = []
            with os.scandir(node_fd) as entries:
                for entry in entries:
                    if fnmatch.fnmatchcase(entry.name, REPORT_GLOB) and entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):
                            reports.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
            removed = [name for _, name in sorted(reports)[: max(0, len(reports) - self.keep)]]
            for name in removed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=node_fd)
        except OSError as e:
            self.failed(node, "retention", e)
            return []
        return removed


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def describe(error: OSError) -> str:
    """An ``OSError`` for an operator: a full disk or a refused link named as such."""
    detail = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full ({detail})"
    if error.errno == errno.ELOOP:
        return "a symbolic link, refused"
    return detail


def _open_directory(name: str, parent_fd: int) -> int:
    """``parent/name`` as a directory fd, never through a symbolic link (refused as ELOOP)."""
    try:
        return os.open(name, _DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as e:
        if e.errno == errno.ENOTDIR and stat.S_ISLNK(
            os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
        ):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
        raise


def _remove_partials(node_fd: int) -> None:
    with os.scandir(node_fd) as entries:
        stale = [e.name for e in entries if e.name.endswith(".partial") and e.is_file(follow_symlinks=False)]
    for name in stale:
        if name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=node_fd)


class _LocalWriter:
    def __init__(
        self, owner: LocalDirectory, node: str, *, node_fd: int, handle: IO[bytes], temp: str, final: str
    ) -> None:
        self._owner = owner
        self._node = node
        self._node_fd = node_fd  # the node's directory, opened once: no path is resolved again
        self._handle = handle
        self._temp = temp
        self._final = final
        self._buffer = bytearray()
        self._done = False
        self.location = str(owner.node_dir(node) / final)

    async def write(self, chunk: memoryview) -> None:
        self._buffer += chunk
        if len(self._buffer) >= FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            await asyncio.to_thread(self._handle.write, data)
        except OSError as e:
            raise self._owner.failed(self._node, "write", e) from None

    async def commit(self) -> None:
        await self._flush()
        try:
            await asyncio.to_thread(self._finish)
        except OSError as e:
            raise self._owner.failed(self._node, "store", e) from None
        self._done = True
        try:
            removed = await asyncio.to_thread(self._owner.prune, self._node, self._node_fd)
        finally:
            os.close(self._node_fd)
        if removed:
            log.info("old bug reports removed", node=self._node, files=removed, keep=self._owner.keep)

    def _finish(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._temp, self._final, src_dir_fd=self._node_fd, dst_dir_fd=self._node_fd)
        os.fsync(self._node_fd)  # the rename itself survives a crash

    async def abort(self) -> None:
        """Discard the partial file; never raises (a failure to clean up is counted and logged)."""
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        try:
            await asyncio.to_thread(self._discard)
        except OSError as e:
            self._owner.failed(self._node, "discard", e)
        finally:
            os.close(self._node_fd)

    def _discard(self) -> None:
        with contextlib.suppress(OSError):  # a failed write may fail the close again; the file goes anyway
            self._handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp, dir_fd=self._node_fd)
