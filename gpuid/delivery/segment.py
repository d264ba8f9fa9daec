"""One spool segment file: opened safely, read within a bound, appended whole or not at all.

The spool directory is the one place gpuid reads its own input back from
disk, and a volume outlives the process that wrote it, so it is treated as
untrusted: only regular files are read (``O_NOFOLLOW`` refuses a symlink,
``O_NONBLOCK`` keeps a FIFO from hanging start-up, ``fstat`` refuses
directories, devices and sockets), a read stops at ``MAX_SEGMENT_BYTES``, and
every line is checked before it becomes a record. An append is all or
nothing: a short write, ENOSPC or EFBIG is truncated back to the last
complete line, so a full disk costs the records refused, counted, never a torn
segment.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gpuid.errors import SpoolCorruptError
from gpuid.records import (
    CHANGE_FIELD_NAMES,
    CHANGES,
    FIELD_NAMES,
    SCHEMA_VERSION,
    GpuChange,
    GPUReading,
    MigDevice,
    Record,
)

SEGMENT_NAME = re.compile(r"^(\d{16})\.jsonl$")
SET_ASIDE_NAME = re.compile(r"^\d{16}\.corrupt$")
MAX_SEGMENT_BYTES = 32 * 1024 * 1024  # what a read-back accepts; segments roll long before it
ROLL_BYTES = 4 * 1024 * 1024
HEADER = json.dumps({"gpuid_spool": 1, "schema_version": SCHEMA_VERSION}).encode() + b"\n"

_REQUIRED_STR = ("cluster", "node", "source", "pod_uid", "gpu_uuid", "observed_at")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _mig_device(data: object) -> MigDevice:
    if not isinstance(data, dict):
        raise SpoolCorruptError("mig device is not an object")
    uuid, profile = data.get("uuid"), data.get("profile")
    gi, ci = data.get("gpu_instance_id"), data.get("compute_instance_id")
    if not all(v is None or isinstance(v, str) for v in (uuid, profile)):
        raise SpoolCorruptError("mig device uuid/profile is not a string")
    if not all(v is None or _is_int(v) for v in (gi, ci)):
        raise SpoolCorruptError("mig device instance id is not an integer")
    return MigDevice(uuid, profile, gi, ci)


def change_from_dict(data: dict[str, Any]) -> GpuChange:
    """Inverse of ``record_dict`` for a ``gpu_changed`` record, checking every type."""
    values: dict[str, Any] = {name: data.get(name) for name in CHANGE_FIELD_NAMES}
    for name, value in values.items():
        required = name in ("cluster", "node", "change", "gpu_uuid", "observed_at")
        if not (isinstance(value, str) or (value is None and not required)):
            raise SpoolCorruptError(f"{name}: unexpected {type(value).__name__}")
    if values["change"] not in CHANGES:
        raise SpoolCorruptError(f"change: not one of {', '.join(CHANGES)}")
    return GpuChange(**values)


def reading_from_dict(data: object) -> Record:
    """Inverse of ``record_dict``, checking every type; unknown keys (a newer schema) are ignored."""
    if not isinstance(data, dict):
        raise SpoolCorruptError(f"a JSON {type(data).__name__}, not an object")
    if data.get("event") == GpuChange.EVENT:
        return change_from_dict(data)
    values: dict[str, Any] = {name: data.get(name) for name in FIELD_NAMES}
    for name, value in values.items():
        if name in _REQUIRED_STR:
            fits = isinstance(value, str)
        elif name == "gpu_index":
            fits = _is_int(value)
        elif name == "module_id":
            fits = value is None or _is_int(value)
        elif name == "mig_devices":
            fits = value is None or isinstance(value, list)
        else:
            fits = value is None or isinstance(value, str)
        if not fits:
            raise SpoolCorruptError(f"{name}: unexpected {type(value).__name__}")
    try:
        datetime.fromisoformat(values["observed_at"])
    except ValueError:
        raise SpoolCorruptError("observed_at is not a timestamp") from None
    values["mig_devices"] = tuple(_mig_device(m) for m in values["mig_devices"] or ())
    return GPUReading(**values)


def read_segment(path: Path, limit: int = MAX_SEGMENT_BYTES) -> bytes:
    """The bytes of the regular file at ``path`` (at most ``limit``), else ``SpoolCorruptError``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        why = "a symbolic link" if e.errno == errno.ELOOP else f"cannot open: {e.strerror}"
        raise SpoolCorruptError(f"{path.name}: {why}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpoolCorruptError(f"{path.name}: not a regular file")
        if info.st_size > limit:
            raise SpoolCorruptError(f"{path.name}: larger than a segment may be ({limit} bytes)")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise SpoolCorruptError(f"{path.name}: larger than a segment may be ({limit} bytes)")
        return b"".join(chunks)
    except OSError as e:
        raise SpoolCorruptError(f"{path.name}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)


def count_entries(data: bytes) -> int:
    """Lines after the first one, a torn last line included: the records a segment holds."""
    rest = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return rest.count(b"\n") + (1 if rest and not rest.endswith(b"\n") else 0)


def check_header(data: bytes) -> None:
    """Raise ``SpoolCorruptError`` unless the first line is a gpuid spool header.

    Another format, or a newer one, is set aside rather than misread.
    """
    try:
        header = json.loads(data.split(b"\n", 1)[0])
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("gpuid_spool") != 1:
        raise SpoolCorruptError("not a gpuid spool segment (unknown header)")


def decode_entries(data: bytes) -> tuple[list[Record], list[str]]:
    """The records of a segment's lines, and why each bad line (a torn last one too) was skipped."""
    check_header(data)
    lines = data.split(b"\n")[1:]
    tail = lines.pop()  # empty when the segment ends with a complete line
    records: list[Record] = []
    bad: list[str] = ["torn last line"] if tail else []
    for line in lines:
        try:
            records.append(reading_from_dict(json.loads(line)))
        except (ValueError, TypeError, RecursionError, SpoolCorruptError) as e:
            bad.append(f"{type(e).__name__}: {e}"[:200])
    return records, bad


class SegmentWriter:
    """The appending end of a new segment file; ``append`` writes whole lines or nothing."""

    def __init__(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd: int | None = os.open(path, flags, 0o600)
        self.size = 0

    def append(self, data: bytes) -> None:
        """Write ``data`` whole, or raise ``OSError`` with the file as it was before."""
        if self._fd is None:
            raise OSError(errno.EBADF, "segment closed")
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                written = os.write(self._fd, view[done:])
                if written <= 0:
                    raise OSError(errno.ENOSPC, "no progress writing the spool")
                done += written
        except OSError:
            if done:  # if even this fails, the torn line is skipped (and counted) when read back
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self.size)
            raise
        self.size += len(data)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):  # what it held was written; nothing to report
                os.close(fd)


@dataclass
class Segment:
    """One segment in its lane's order: its file, its records, its bytes, how many are acknowledged."""

    path: Path
    count: int
    size: int
    acked: int = 0
    writer: SegmentWriter | None = None  # open while records are still appended to it

    def seal(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
