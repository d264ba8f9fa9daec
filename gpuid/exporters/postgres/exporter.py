"""PostgreSQL exporter: reading history, current inventory and GPU moves.

Each batch is one transaction, written one of two ways (``pg_write``): into
the history only when, by the inventory cache (``pg_cache``), it changes no
inventory row; otherwise folded into the inventory. A stale cache, a change
the cache's first look missed, or a replayed batch sends it round again the
safe way. The connection that writes
is kept between batches (a pool round trip less per batch) and given back to
the pool on any failure, which also drops the cache. Failures are sorted into
the exception tree by ``pg_check``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from gpuid.errors import ExportError, RecordError
from gpuid.exporters import ExporterSettings
from gpuid.exporters.postgres.cache import DEFAULT_CAPACITY, InventoryCache
from gpuid.exporters.postgres.check import classify, prepare
from gpuid.exporters.postgres.fold import MOVE_COLUMNS
from gpuid.exporters.postgres.migrations import check_writer_schema, migrate
from gpuid.exporters.postgres.schema import Tables
from gpuid.exporters.postgres.settings import PostgresSettings
from gpuid.exporters.postgres.write import BatchWriter, Changes, Stale
from gpuid.records import GPUReading, Record

log = structlog.get_logger("gpuid.exporters.postgres")


def connect_kwargs(config: PostgresSettings) -> dict[str, Any]:
    """Arguments of ``asyncpg.connect``/``create_pool`` for these settings."""
    kwargs: dict[str, Any] = {"timeout": config.timeout, "server_settings": {"application_name": "gpuid"}}
    if config.sslmode:
        kwargs["ssl"] = config.sslmode
    if config.dsn:
        return {"dsn": config.dsn, **kwargs}
    return {
        "host": config.host,
        "port": config.port,
        "user": config.user,
        "password": config.password or None,
        "database": config.database,
        **kwargs,
    }


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_INFINITY, _NEGATIVE_INFINITY = 2**63 - 1, -(2**63)  # PostgreSQL's binary 'infinity', '-infinity'
# asyncpg writes datetime.max and datetime.min (their microseconds since 2000) as the infinities
_AS_INFINITY = {252_455_615_999_999_999: _INFINITY, -63_082_281_600_000_000: _NEGATIVE_INFINITY}
_MAX_REMEMBERED = 4096


async def fast_timestamps(conn: Any) -> None:
    """Encode ``timestamptz`` values on this connection from a memo of microseconds since 2000.

    asyncpg's own encoder does date arithmetic on Python objects for every value: in a COPY of
    readings that is about an eighth of the client's work, while the readings of one scan share
    one ``datetime``. Values are written and read back exactly as asyncpg does."""
    remembered: dict[datetime, int] = {}

    def encode(value: datetime) -> tuple[int]:
        if (micros := remembered.get(value)) is None:
            if not isinstance(value, datetime):
                raise TypeError(f"expected a datetime, got {type(value).__name__}")
            if len(remembered) >= _MAX_REMEMBERED:
                remembered.clear()
            if value in (datetime.max, datetime.min):  # naive, as asyncpg's infinities
                micros = _INFINITY if value == datetime.max else _NEGATIVE_INFINITY
            else:
                delta = value.astimezone(UTC) - _PG_EPOCH  # a naive one is local time, as in asyncpg
                micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            micros = remembered[value] = _AS_INFINITY.get(micros, micros)
        return (micros,)

    await conn.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=encode, decoder=_decode_timestamp, format="tuple"
    )


def _decode_timestamp(value: tuple[int]) -> datetime:
    if value[0] in (_INFINITY, _NEGATIVE_INFINITY):
        return datetime.max if value[0] == _INFINITY else datetime.min  # naive, as asyncpg decodes them
    return _PG_EPOCH + timedelta(microseconds=value[0])


async def connect(config: PostgresSettings) -> Any:
    """One plain connection, for one-off tools (``gpuid inventory``, the benchmark)."""
    return await asyncpg.connect(**connect_kwargs(config))


def postgres_error(e: BaseException, config: PostgresSettings) -> ExportError:
    """A connection or query failure as an ``ExportError`` (transient, record or lane)."""
    return classify(e, config)


class PostgresExporter:
    name = "postgres"

    def __init__(self, config: PostgresSettings, *, cache_capacity: int = DEFAULT_CAPACITY) -> None:
        self.config = config
        self.batch_size = config.batch_size  # delivery's batch for this lane (POSTGRES_BATCH_SIZE)
        self.tables = Tables.from_settings(config)
        self.cache = InventoryCache(cache_capacity)
        self.writer = BatchWriter(self.tables, self.cache)
        self._pool: Any = None
        self._conn: Any = None  # the connection that writes, kept between batches
        self._one_batch = asyncio.Lock()  # concurrent callers take turns on that connection

    @classmethod
    def from_settings(cls, settings: ExporterSettings) -> PostgresExporter:
        assert settings.postgres is not None  # parsed whenever postgres is selected
        return cls(settings.postgres)

    async def open(self) -> None:
        cfg = self.config
        try:
            pool = await asyncpg.create_pool(
                min_size=1,
                max_size=cfg.pool_size,
                command_timeout=cfg.timeout,
                init=fast_timestamps,
                **connect_kwargs(cfg),
            )
        except Exception as e:  # "from None": the library's error may quote the DSN
            raise classify(e, cfg) from None
        try:
            async with pool.acquire(timeout=cfg.timeout) as conn:
                if cfg.auto_migrate and (applied := await migrate(conn, self.tables)):
                    log.info("postgres schema migrated", versions=applied, schema=cfg.schema)
                await check_writer_schema(conn, self.tables)
        except Exception as e:
            pool.terminate()
            raise classify(e, cfg) from None
        except BaseException:  # cancelled while connecting: leave no connection behind
            pool.terminate()
            raise
        self._pool = pool
        log.info("postgres connected", target=cfg.target, schema=cfg.schema)

    async def export(self, batch: Sequence[Record]) -> None:
        if self._pool is None:
            raise ExportError("postgres: not connected", transient=True)
        # gpu_changed records are not stored: gpu_moves holds the moves, derived from the readings.
        readings = [r for r in batch if isinstance(r, GPUReading)]
        at: Sequence[int] = range(len(batch))  # where each reading sits in the batch
        if len(readings) < len(batch):
            at = [i for i, r in enumerate(batch) if isinstance(r, GPUReading)]
        if not readings:
            return
        async with self._one_batch:
            try:
                moves = await self._write(readings)
            except BaseException as e:  # also a RecordError: an aborted COPY leaves a connection to reset
                self.cache.clear()  # whatever we believed may not have been committed
                await self._release()
                if not isinstance(e, Exception):
                    raise
                raise _in_batch(classify(e, self.config, readings), at) from None
        logger = log.bind() if moves else log  # bind once, not once per move
        for move in moves:
            logger.info("gpu_moved", **{k: _loggable(v) for k, v in zip(MOVE_COLUMNS, move, strict=True)})

    async def _write(self, readings: Sequence[GPUReading]) -> list[tuple[Any, ...]]:
        """Write one batch; RecordError for records that can never be stored (nothing is kept)."""
        sample = prepare([readings[0], readings[len(readings) // 2], readings[-1]])
        conn, unchanged, replay = await self._connection(), self.cache.likely_unchanged(sample), False
        rows: list[tuple[Any, ...]] | None = None  # made on first need: the steady path streams them
        while True:
            try:
                if unchanged:
                    await self.writer.add_history(conn, readings, replay)
                    return []
                rows = prepare(readings) if rows is None else rows
                return await self.writer.fold(conn, rows, replay)
            except Stale:
                self.cache.clear()
                unchanged = False
            except Changes:
                unchanged = False
            except asyncpg.UniqueViolationError:
                if replay:
                    raise
                replay = True  # some of the batch is already stored: a retried or overlapping batch

    async def _connection(self) -> Any:
        if self._conn is None:
            self._conn = await self._pool.acquire(timeout=self.config.timeout)
        return self._conn

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection is dropped by the pool
                await self._pool.release(conn, timeout=self.config.timeout)

    async def health(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with self._pool.acquire(timeout=self.config.timeout) as conn:
                return bool(await conn.fetchval("SELECT true"))
        except Exception:  # health answers a question, it does not report
            return False

    async def close(self) -> None:
        self.cache.clear()
        if self._pool is not None:
            await self._release()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(self.config.timeout):
                    await pool.close()
            except TimeoutError:
                with contextlib.suppress(Exception):
                    pool.terminate()


def _loggable(value: Any) -> Any:
    return str(value) if isinstance(value, datetime) else value


def _in_batch(error: ExportError, at: Sequence[int]) -> ExportError:
    """``error`` with a ``RecordError``'s indexes moved from the readings to the whole batch."""
    if isinstance(error, RecordError) and error.indexes:
        return RecordError(str(error), indexes=tuple(at[i] for i in error.indexes))
    return error
