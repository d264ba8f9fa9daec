"""What PostgreSQL refuses, and what each refusal costs: a record, a retry, or the lane.

``prepare`` (or ``rows_of``, row by row) turns a batch into COPY rows and
rejects what is cheap to check on every row (timestamps, int32 ranges).
Everything else PostgreSQL refuses (NUL in text, lone surrogates, oversized
index keys, a value of the wrong type) is rare, so it is found only when a
write fails: ``diagnose`` then names exactly the records at fault, and the
caller drops those and retries the rest. ``classify`` maps any failure to the
exception tree: transient (connection, resources, locks), record (data), or
lane (credentials, database, schema, permissions), with secrets removed.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import operator
import re
import ssl
from collections.abc import Iterator, Sequence
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Any

import asyncpg

from gpuid.errors import ExportError, LaneError, RecordError
from gpuid.exporters.postgres.fold import ROW_COLUMNS, observed_at
from gpuid.exporters.postgres.schema import READING_COLUMNS
from gpuid.exporters.postgres.settings import PostgresSettings
from gpuid.records import GPUReading

COLUMNS = list(ROW_COLUMNS)
_PLAIN = operator.attrgetter(*COLUMNS[:-2])  # all but mig_devices and observed_at
_INT32 = (-(2**31), 2**31 - 1)
# Index entries are limited to about 2.7 KB; no real node, serial or UID comes near this.
MAX_KEY_BYTES = 512
_INDEXED = frozenset({"cluster", "gpu_uuid", "pod_uid", "node", "gpu_serial"})
# Classes worth retrying: connection, resources, operator intervention, rollback, lock, system.
_TRANSIENT = ("08", "53", "57", "40", "55", "58", "25")
_RECORD = ("22", "23", "54")
_HINTS = {
    "28": "check POSTGRES_USER and POSTGRES_PASSWORD",
    "3D": "check POSTGRES_DB",
    "42501": "grant gpuid what docs/exporters.md (PostgreSQL) lists on its tables",
    "42P01": "set POSTGRES_AUTO_MIGRATE=true once, or create the tables (docs/exporters.md)",
}
_COPY_LINE = re.compile(r"COPY (\S+), line (\d+)")


def mig_json(devices: Sequence[Any]) -> str:
    """The MIG devices as the JSON array the jsonb column holds, written by hand: ``json.dumps``
    of their dicts is 3x slower, and this runs for every MIG GPU of every batch."""
    return "[" + ",".join([_mig_object(d) for d in devices]) + "]"


def _mig_object(d: Any) -> str:
    u, p, g, c = d.uuid, d.profile, d.gpu_instance_id, d.compute_instance_id
    if not (type(u) is str and type(p) is str and type(g) is int and type(c) is int):
        u, p, g, c = map(_json_scalar, (u, p, g, c))  # a null, or a value that is no JSON scalar
        return f'{{"uuid":{u},"profile":{p},"gpu_instance_id":{g},"compute_instance_id":{c}}}'
    escape = encode_basestring_ascii  # json's own C escaper, as json.dumps uses
    return f'{{"uuid":{escape(u)},"profile":{escape(p)},"gpu_instance_id":{g},"compute_instance_id":{c}}}'


def _json_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is str:
        return encode_basestring_ascii(value)
    if type(value) is int:
        return str(value)
    raise TypeError(f"not a MIG device value: {type(value).__name__}")


def prepare(batch: Sequence[GPUReading]) -> list[Row]:
    """The batch as COPY rows of the readings table (``observed_at`` parsed, last)."""
    rows: list[Row] = []
    with gc_paused():
        collections.deque(rows_of(batch, keep=rows), maxlen=0)  # runs it; the rows are kept
    return rows


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic collector while a loop allocates a few tuples per row: it then runs once
    afterwards instead of every few hundred rows, each time scanning everything alive (the
    delivery queue...). Nothing here can form a cycle; the loops never await."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


Row = tuple[Any, ...]


def rows_of(batch: Sequence[GPUReading], keep: list[Row]) -> Iterator[Row]:
    """The COPY rows of ``batch``, made one at a time so a COPY can stream them as they come:
    the server stores the first rows while the rest are made; each is also added to ``keep``.
    A record that can never be stored raises a ``RecordError`` naming it (which aborts such a
    COPY: nothing of the batch is kept)."""
    parsed: dict[str, datetime] = {}  # the GPUs of one scan share a timestamp
    text: Any = object()  # ... and come one after another
    at = None
    low, high = _INT32
    plain = _PLAIN
    try:
        for r in batch:
            if r.observed_at is not text:
                text = r.observed_at
                if (at := parsed.get(text)) is None:
                    at = parsed[text] = observed_at(r)
            module = r.module_id
            if not (low <= r.gpu_index <= high and (module is None or low <= module <= high)):
                raise ValueError("int32")
            row = (*plain(r), mig_json(r.mig_devices) if r.mig_devices else "[]", at)
            keep.append(row)
            yield row
    except (ValueError, TypeError, AttributeError):
        raise refused(batch, "", None) from None


def _text_fault(value: Any, name: str) -> str | None:
    if not isinstance(value, str):
        return f"{name} is not text"
    if "\x00" in value:
        return f"{name} contains a NUL character"
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return f"{name} is not valid Unicode"
    return (
        f"{name} is longer than {MAX_KEY_BYTES} bytes" if name in _INDEXED and size > MAX_KEY_BYTES else None
    )


def fault(r: GPUReading) -> str | None:
    """Why PostgreSQL would refuse this record, or None."""
    for name, kind in READING_COLUMNS:
        value = getattr(r, name, None)
        if value is None or (name == "mig_devices" and not value):
            if "NOT NULL" in kind and name != "mig_devices":
                return f"{name} is null"
        elif kind.startswith("integer"):
            if type(value) is not int or not _INT32[0] <= value <= _INT32[1]:
                return f"{name} is not an int32"
        elif kind.startswith("text"):
            if problem := _text_fault(value, name):
                return problem
        elif name == "mig_devices":
            try:
                texts = [v for m in value for v in m.to_dict().values() if isinstance(v, str)]
                mig_json(value)
            except (TypeError, ValueError, AttributeError):
                return "mig_devices is not JSON"
            if problem := next(filter(None, (_text_fault(v, name) for v in texts)), None):
                return problem
        else:
            try:
                observed_at(r)
            except (ValueError, TypeError):
                return "observed_at is not an RFC 3339 timestamp"
    return None


def diagnose(batch: Sequence[GPUReading]) -> dict[int, str]:
    """The records PostgreSQL would refuse, by position in the batch, with the reason."""
    return {i: why for i, r in enumerate(batch) if (why := fault(r))}


def refused(batch: Sequence[GPUReading], message: str, error: BaseException | None) -> RecordError:
    """A RecordError naming the refused records (from ``diagnose``, else the failing COPY line)."""
    faults = diagnose(batch)
    if not faults and error is not None and (m := _COPY_LINE.search(getattr(error, "context", "") or "")):
        faults = {int(m.group(2)) - 1: message}
    shown = "; ".join(f"#{i}: {why}" for i, why in list(faults.items())[:5])
    more = f" (+{len(faults) - 5} more)" if len(faults) > 5 else ""
    text = f"postgres: {len(faults) or 'some'} record(s) refused: {shown or message}{more}"
    return RecordError(text, indexes=tuple(sorted(faults)))


def classify(e: BaseException, config: PostgresSettings, batch: Sequence[GPUReading] = ()) -> ExportError:
    """Wrap a connection or query failure in the exception tree, with a hint, secrets removed."""
    if isinstance(e, ExportError):
        return e
    kind = "lane"
    if isinstance(e, asyncpg.PostgresError):
        state = e.sqlstate or ""
        hint = _HINTS.get(state) or _HINTS.get(state[:2])
        message = f"postgres {config.target}: {e} (SQLSTATE {state})" + (f"; {hint}" if hint else "")
        if state[:2] in _TRANSIENT or state == "23505":  # a key taken by a writer outside the locks
            kind = "transient"
        elif state[:2] in _RECORD and state != "23505":
            kind = "record"
    else:
        message = f"postgres {config.target}: {type(e).__name__}: {e}"
        if isinstance(e, ValueError | TypeError | ArithmeticError) and not isinstance(
            e, asyncpg.InterfaceError
        ):
            kind = "record"  # the client could not encode a value
        elif isinstance(e, asyncpg.exceptions._base.DataError):
            kind = "record"
        elif not isinstance(
            e, ssl.SSLCertVerificationError | asyncpg.ClientConfigurationError
        ) and isinstance(e, OSError | TimeoutError | asyncpg.InterfaceError):
            kind = "transient"  # refused, reset, timed out, connection lost mid-query
    for secret in config.secrets():
        message = message.replace(secret, "***")
    if kind == "record":
        error = refused(batch, message, e)
        if error.indexes or isinstance(e, asyncpg.PostgresError):
            return error
        kind = "lane"  # a client-side failure no record explains: a fault of gpuid, keep everything
    if kind == "transient":
        return ExportError(message, transient=True)
    return LaneError(message)
