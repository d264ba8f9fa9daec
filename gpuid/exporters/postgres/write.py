"""The two ways a batch reaches PostgreSQL: into the history only, or folded into the inventory.

``add_history`` is the steady state: under the writers' *shared* lock, and only
if the inventory epoch is still the one the cache is exact at, the rows are
COPY'd into the history; nothing else is written. The caller chose this path
on a sample of the rows; the COPY streams each row as it is made, the cache
checks them all while the server stores the last ones, and a row that changes
the inventory after all rolls the batch back. ``fold`` takes the lock
*exclusive*, which waits for every shared writer, reads the touched inventory
rows and the newest reading of each GPU that may have changed, folds the batch
into them (``pg_fold``) and writes only new or changed rows and the moves, each
kind in one statement. A first sweep skips the reads: it inserts the GPUs as
new and reads rows only if that hits existing ones. In both, a COPY that hits
the history key means a replayed batch; the caller then asks again with
``replay``, and the rows go through a temp table with ``ON CONFLICT DO
NOTHING``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from gpuid.exporters.postgres.cache import InventoryCache
from gpuid.exporters.postgres.check import COLUMNS, gc_paused, rows_of
from gpuid.exporters.postgres.fold import (
    FACET_COUNT,
    MOVE_COLUMNS,
    ROW_CLUSTER,
    ROW_UUID,
    Fold,
    Key,
    Placed,
    fold,
)
from gpuid.exporters.postgres.schema import STATE_COLUMNS, Statements, Tables
from gpuid.records import GPUReading


class Stale(Exception):  # noqa: N818 - a signal, not an error: the cache is out of date
    """The inventory changed since the cache was exact: the batch must be folded."""


class Changes(Exception):  # noqa: N818 - a signal, not an error
    """The batch changes the inventory: it must be folded."""


@contextlib.asynccontextmanager
async def transaction(conn: Any, begin: str) -> AsyncIterator[None]:
    """``begin`` (BEGIN and more, one round trip) ... COMMIT, or ROLLBACK on any failure."""
    try:
        await conn.execute(begin)
        yield
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(Exception):  # else releasing the connection rolls back
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


class BatchWriter:
    def __init__(self, tables: Tables, cache: InventoryCache) -> None:
        self.tables = tables
        self.sql = Statements(tables)
        self.cache = cache
        self._new = True  # whether GPUs the cache does not know are likely never seen (see fold)

    async def add_history(self, conn: Any, batch: Sequence[GPUReading], replay: bool) -> None:
        """Store ``batch`` in the history only: ``Stale`` if the cache is no longer exact,
        ``Changes`` if the rows change the inventory after all (nothing is stored then)."""
        async with transaction(conn, self.sql.begin_shared):
            # Read under the lock: no writer can change the inventory until we commit.
            if await conn.fetchval(self.sql.epoch) != self.cache.epoch:
                raise Stale
            # The COPY streams each row as it is made, so the server stores the first rows while
            # the rest are made; once all are made, the cache checks them while the server works.
            rows = Streamed(batch)
            # The collector is held until the rows are made and checked (see gc_paused); the
            # ``with`` lets go of it even if this task is cancelled mid-COPY.
            with gc_paused():
                copy = asyncio.create_task(self._history(conn, rows, replay), name="postgres-history-copy")
                made = asyncio.ensure_future(rows.ended.wait())
                try:
                    await asyncio.wait([copy, made], return_when=asyncio.FIRST_COMPLETED)
                    unchanged = rows.ended.is_set() and self.cache.unchanged(rows.made)
                except BaseException:
                    copy.cancel()
                    await asyncio.gather(copy, return_exceptions=True)
                    raise
                finally:
                    made.cancel()
            await copy
            if not unchanged:
                raise Changes

    async def fold(self, conn: Any, rows: list[tuple[Any, ...]], replay: bool) -> list[tuple[Any, ...]]:
        keys = dict.fromkeys((row[ROW_CLUSTER], row[ROW_UUID]) for row in rows)
        new = self._new and not self.cache.knows(keys)
        begin = self.sql.begin_exclusive + ("; SAVEPOINT new_gpus" if new else "")
        async with transaction(conn, begin):
            result = await self._insert_new(conn, rows) if new else None
            if result is None:
                result = await self._fold_known(conn, rows, keys)
            await self._history(conn, rows, replay)
            for stage, records, columns in (
                ("gpuid_state_stage", result.updates, STATE_COLUMNS),
                ("gpuid_move_stage", result.moves, MOVE_COLUMNS),
            ):
                if records:
                    await self._merge(conn, stage, records, columns)
            epoch = await conn.fetchval(self.sql.bump if result.changed else self.sql.epoch)
        with gc_paused():
            if result.changed:
                self.cache.advance(epoch - 1, epoch, result.final)  # nobody else bumps it under our lock
            else:
                self.cache.learn(epoch, result.final)
        return result.moves

    async def _insert_new(self, conn: Any, rows: list[tuple[Any, ...]]) -> Fold | None:
        with gc_paused():
            result = fold(rows, {}, {})
        try:
            await self._insert_state(conn, result.inserts)
        except asyncpg.UniqueViolationError:
            await conn.execute("ROLLBACK TO SAVEPOINT new_gpus")
            self._new = False  # known GPUs the cache does not hold (a restart): read rows first
            return None
        return result

    async def _fold_known(self, conn: Any, rows: list[tuple[Any, ...]], keys: Iterable[Key]) -> Fold:
        current = {
            (row[0], row[1]): Placed(tuple(row[3:13]), row[2], row[13], row[14], row[15])
            for row in await conn.fetch(self.sql.current, *_json_columns(keys))
        }
        self._new = not current
        # Only a GPU seen with other facets than its row can change: judge those by their history.
        doubt = {
            k
            for row in rows
            if (k := (row[ROW_CLUSTER], row[ROW_UUID])) in current and row[:FACET_COUNT] != current[k].facets
        }
        newest: dict[Key, datetime | None] = {}
        if doubt:
            newest = {(c, u): at for c, u, at in await conn.fetch(self.sql.newest, *_json_columns(doubt))}
        with gc_paused():
            result = fold(rows, current, newest)
        await self._insert_state(conn, result.inserts)
        return result

    async def _insert_state(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            schema, table = self.tables.names[0], self.tables.state_table
            await conn.copy_records_to_table(table, schema_name=schema, records=rows, columns=STATE_COLUMNS)

    async def _history(self, conn: Any, rows: Iterable[tuple[Any, ...]], replay: bool) -> None:
        if replay:
            await self._merge(conn, "gpuid_stage", rows, COLUMNS)
        else:
            schema, readings = self.tables.names[:2]
            await conn.copy_records_to_table(readings, schema_name=schema, records=rows, columns=COLUMNS)

    async def _merge(
        self, conn: Any, stage: str, rows: Iterable[tuple[Any, ...]], columns: Sequence[str]
    ) -> None:
        await conn.execute(self.sql.stages[stage])
        await conn.copy_records_to_table(stage, records=rows, columns=list(columns))
        await conn.execute(self.sql.merge[stage])


class Streamed:
    """The batch's rows handed on one by one (to a COPY) and kept in ``made``; ``ended`` is set
    once the last is made."""

    def __init__(self, batch: Sequence[GPUReading]) -> None:
        self._batch = batch
        self.made: list[tuple[Any, ...]] = []
        self.ended = asyncio.Event()

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        yield from rows_of(self._batch, keep=self.made)
        self.ended.set()


def _json_columns(keys: Iterable[Key]) -> tuple[str, str]:
    clusters, uuids = zip(*keys, strict=True)
    return json.dumps(clusters), json.dumps(uuids)
