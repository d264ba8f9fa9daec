# ruff: noqa: S608 - table names are validated identifiers, quoted; every value is a bind parameter
"""PostgreSQL exporter: reading history, current inventory and GPU moves.

One transaction per batch: the batch is COPY'd into a temp table, inserted
into the history with ``ON CONFLICT DO NOTHING`` on its natural key (a retried
batch adds nothing), and folded into the inventory under row locks. A GPU
whose newest reading is on another machine (node name when the machine is
unknown) than its inventory row says has *moved*: that lands in the moves
table and in a ``gpu_moved`` log event. Readings older than the inventory's
``last_seen`` (a spool replay) only extend history and ``first_seen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from gpuid.errors import ExportError
from gpuid.exporters import ExporterSettings
from gpuid.exporters.postgres.fold import fold, observed_at
from gpuid.exporters.postgres.schema import READING_COLUMNS, Tables, check_schema, migrate
from gpuid.exporters.postgres.settings import PostgresSettings
from gpuid.records import GPUReading, Record

log = structlog.get_logger("gpuid.exporters.postgres")

COLUMNS = [name for name, _ in READING_COLUMNS]
# SQLSTATE classes worth retrying: connection, resources, operator intervention, rollback, lock.
_TRANSIENT_CLASSES = ("08", "53", "57", "40", "55")
_HINTS = {
    "28": "check POSTGRES_USER and POSTGRES_PASSWORD",
    "3D": "check POSTGRES_DB",
    "42501": "grant gpuid INSERT, UPDATE and SELECT on its tables",
    "42P01": "set POSTGRES_AUTO_MIGRATE=true once, or create the tables (docs/exporters.md)",
}


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


async def connect(config: PostgresSettings) -> Any:
    """One plain connection, for one-off tools (``gpuid inventory``, the benchmark)."""
    return await asyncpg.connect(**connect_kwargs(config))


def postgres_error(e: BaseException, config: PostgresSettings) -> ExportError:
    """Wrap a connection or query failure: transient or not, with a hint, secrets removed."""
    if isinstance(e, ExportError):
        return e
    if isinstance(e, asyncpg.PostgresError):
        state = e.sqlstate or ""
        transient = state[:2] in _TRANSIENT_CLASSES
        hint = _HINTS.get(state) or _HINTS.get(state[:2])
        message = f"postgres {config.target}: {e} (SQLSTATE {state})" + (f"; {hint}" if hint else "")
    else:
        # Refused, reset, timed out, connection lost mid-query: the server may come back.
        transient = isinstance(e, OSError | TimeoutError) or (
            isinstance(e, asyncpg.InterfaceError) and not isinstance(e, asyncpg.DataError)
        )
        message = f"postgres {config.target}: {type(e).__name__}: {e}"
    for secret in config.secrets():
        message = message.replace(secret, "***")
    return ExportError(message, transient=transient)


class PostgresExporter:
    name = "postgres"

    def __init__(self, config: PostgresSettings) -> None:
        self.config = config
        self.tables = Tables.from_settings(config)
        self._pool: Any = None

    @classmethod
    def from_settings(cls, settings: ExporterSettings) -> PostgresExporter:
        assert settings.postgres is not None  # parsed whenever postgres is selected
        return cls(settings.postgres)

    async def open(self) -> None:
        cfg = self.config
        try:
            pool = await asyncpg.create_pool(
                min_size=1, max_size=cfg.pool_size, command_timeout=cfg.timeout, **connect_kwargs(cfg)
            )
        except Exception as e:  # "from None": the library's error may quote the DSN
            raise postgres_error(e, cfg) from None
        try:
            async with pool.acquire(timeout=cfg.timeout) as conn:
                if cfg.auto_migrate:
                    if applied := await migrate(conn, self.tables):
                        log.info("postgres schema migrated", versions=applied, schema=cfg.schema)
                else:
                    await check_schema(conn, self.tables)
        except Exception as e:
            pool.terminate()
            raise postgres_error(e, cfg) from None
        except BaseException:  # cancelled while connecting: leave no connection behind
            pool.terminate()
            raise
        self._pool = pool
        log.info("postgres connected", target=cfg.target, schema=cfg.schema)

    async def export(self, batch: Sequence[Record]) -> None:
        readings = [r for r in batch if isinstance(r, GPUReading)]  # gpu_changed: gpu_moves has the moves
        if self._pool is None:
            raise ExportError("postgres: not connected", transient=True)
        try:
            async with self._pool.acquire(timeout=self.config.timeout) as conn, conn.transaction():
                moves = await self._write(conn, readings)
        except Exception as e:
            raise postgres_error(e, self.config) from None
        for move in moves:
            log.info("gpu_moved", **{k: str(v) if isinstance(v, datetime) else v for k, v in move.items()})

    async def _write(self, conn: Any, batch: Sequence[GPUReading]) -> list[dict[str, Any]]:
        t = self.tables
        rows = [
            (
                *(getattr(r, c) for c in COLUMNS[:-2]),
                json.dumps([asdict(m) for m in r.mig_devices]),
                observed_at(r),
            )
            for r in batch
        ]
        # Per connection, emptied at each commit: cheaper than creating it for every batch.
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS gpuid_stage (LIKE {t.readings} INCLUDING DEFAULTS)"
            " ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table("gpuid_stage", records=rows, columns=COLUMNS)
        cols = ", ".join(COLUMNS)
        await conn.execute(
            f"INSERT INTO {t.readings} ({cols}) SELECT {cols} FROM gpuid_stage ON CONFLICT DO NOTHING"
        )
        current = await conn.fetch(
            f"SELECT cluster, gpu_uuid, node, machine, first_seen, last_seen, moves FROM {t.inventory}"
            f" WHERE (cluster, gpu_uuid) IN (SELECT cluster, gpu_uuid FROM gpuid_stage) FOR UPDATE"
        )
        upserts, earlier, moves = fold(batch, {(r["cluster"], r["gpu_uuid"]): dict(r) for r in current})
        if moves:
            keys = ("cluster", "gpu_uuid", "gpu_serial", "from_node", "from_machine", "to_node", "to_machine")
            await conn.executemany(
                f"INSERT INTO {t.moves} ({', '.join(keys)}, previous_seen, moved_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                [(*(m[k] for k in keys), m["previous_seen"], m["moved_at"]) for m in moves],
            )
        if upserts:  # one statement for the whole batch: columns as arrays
            await conn.execute(_UPSERT.format(inventory=t.inventory), *map(list, zip(*upserts, strict=True)))
        if earlier:
            await conn.executemany(
                f"UPDATE {t.inventory} SET first_seen = LEAST(first_seen, $3)"
                " WHERE cluster = $1 AND gpu_uuid = $2",
                earlier,
            )
        return moves

    async def health(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with self._pool.acquire(timeout=self.config.timeout) as conn:
                return bool(await conn.fetchval("SELECT true"))
        except Exception:  # health answers a question, it does not report
            return False

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(self.config.timeout):
                    await pool.close()
            except TimeoutError:
                with contextlib.suppress(Exception):
                    pool.terminate()


_UPSERT = """
INSERT INTO {inventory} AS inv (cluster, gpu_uuid, gpu_serial, chassis_serial, product_name,
    board_part_number, node, machine, module_id, gpu_index, pci_bus_id, driver_version, source,
    first_seen, last_seen, moves)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::int[], $10::int[], $11::text[], $12::text[], $13::text[],
    $14::timestamptz[], $15::timestamptz[], $16::int[])
ON CONFLICT (cluster, gpu_uuid) DO UPDATE SET
    gpu_serial = EXCLUDED.gpu_serial, chassis_serial = EXCLUDED.chassis_serial,
    product_name = EXCLUDED.product_name, board_part_number = EXCLUDED.board_part_number,
    node = EXCLUDED.node, machine = EXCLUDED.machine, module_id = EXCLUDED.module_id,
    gpu_index = EXCLUDED.gpu_index, pci_bus_id = EXCLUDED.pci_bus_id,
    driver_version = EXCLUDED.driver_version, source = EXCLUDED.source,
    first_seen = LEAST(inv.first_seen, EXCLUDED.first_seen), last_seen = EXCLUDED.last_seen,
    moves = EXCLUDED.moves, updated_at = now()
WHERE inv.last_seen <= EXCLUDED.last_seen
"""
