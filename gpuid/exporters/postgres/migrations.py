# ruff: noqa: S608 - table names are validated identifiers, quoted; every value is a bind parameter
"""Versioned migrations of gpuid's PostgreSQL tables, and the check that a writer's schema is current.

Migrations are opt-in (``POSTGRES_AUTO_MIGRATE``) so a DBA can run them once
and grant gpuid INSERT/UPDATE only; they are numbered, applied in one
transaction each, and serialised across replicas by an advisory lock. Append a
migration, never edit one that has shipped.

Version 2 makes the steady state cheap and exact: the history key includes
``gpu_index`` (two GPUs claiming one UUID in a scan are two rows) and its time
index becomes a BRIN; the inventory table becomes ``<inventory>_state`` (its
``last_seen`` renamed ``changed_at``) behind a view under the old name, whose
``last_seen`` is derived from the history; ``<inventory>_epoch`` is created;
and whoever could read or write the old table keeps doing so.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from gpuid.errors import LaneError
from gpuid.exporters.postgres.schema import READING_COLUMNS, Tables, absent, check_schema, derived, quote

LATEST = 2
_LOCK_KEY = 0x67707569_64000001  # pg_advisory_xact_lock key: "gpuid" + 1


def migrations(t: Tables) -> list[tuple[int, str]]:
    columns = ",\n    ".join(f"{name} {kind}" for name, kind in READING_COLUMNS)
    v1 = f"""
CREATE TABLE IF NOT EXISTS {t.readings} (
    {columns},
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, gpu_uuid, observed_at, pod_uid)
);
CREATE INDEX IF NOT EXISTS {quote(t.names[1] + "_observed_at")} ON {t.readings} (observed_at);
CREATE TABLE IF NOT EXISTS {t.inventory} (
    cluster text NOT NULL,
    gpu_uuid text NOT NULL,
    gpu_serial text,
    chassis_serial text,
    product_name text,
    board_part_number text,
    node text NOT NULL,
    machine text,
    module_id integer,
    gpu_index integer,
    pci_bus_id text,
    driver_version text,
    source text,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    moves integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, gpu_uuid)
);
CREATE INDEX IF NOT EXISTS {quote(t.names[2] + "_serial")} ON {t.inventory} (gpu_serial);
CREATE INDEX IF NOT EXISTS {quote(t.names[2] + "_node")} ON {t.inventory} (node);
CREATE INDEX IF NOT EXISTS {quote(t.names[2] + "_last_seen")} ON {t.inventory} (last_seen);
CREATE TABLE IF NOT EXISTS {t.moves} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cluster text NOT NULL,
    gpu_uuid text NOT NULL,
    gpu_serial text,
    from_node text,
    from_machine text,
    to_node text NOT NULL,
    to_machine text,
    previous_seen timestamptz,
    moved_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (cluster, gpu_uuid, moved_at)
);
CREATE INDEX IF NOT EXISTS {quote(t.names[3] + "_moved_at")} ON {t.moves} (moved_at);
"""
    return [(1, v1), (2, _v2(t))]


def _v2(t: Tables) -> str:
    readings, inventory = t.names[1], t.names[2]
    return f"""
DO $$
DECLARE pkey text;
BEGIN
    SELECT conname INTO pkey FROM pg_constraint WHERE conrelid = '{t.readings}'::regclass AND contype = 'p';
    EXECUTE format('ALTER TABLE {t.readings} DROP CONSTRAINT %I', pkey);
END $$;
-- The UUID first: it tells rows apart at once (a cluster name is shared by all) and a GPU's history
-- is found by its UUID alone.
ALTER TABLE {t.readings} ADD PRIMARY KEY (gpu_uuid, cluster, observed_at, pod_uid, gpu_index);
-- Readings arrive in time order: a BRIN index serves time ranges at a fraction of a B-tree's upkeep.
DROP INDEX IF EXISTS {t.schema}.{quote(readings + "_observed_at")};
CREATE INDEX {quote(derived(readings, "_observed_at_brin"))} ON {t.readings} USING brin (observed_at);
ALTER TABLE {t.inventory} RENAME TO {quote(derived(inventory, "_state"))};
ALTER TABLE {t.state} RENAME COLUMN last_seen TO changed_at;
DROP INDEX IF EXISTS {t.schema}.{quote(inventory + "_last_seen")};
CREATE SEQUENCE {t.epoch};
CREATE VIEW {t.inventory} AS
SELECT s.cluster, s.gpu_uuid, s.gpu_serial, s.chassis_serial, s.product_name, s.board_part_number,
    s.node, s.machine, s.module_id, s.gpu_index, s.pci_bus_id, s.driver_version, s.source, s.first_seen,
    GREATEST(s.changed_at, (SELECT max(r.observed_at) FROM {t.readings} r
        WHERE r.cluster = s.cluster AND r.gpu_uuid = s.gpu_uuid)) AS last_seen,
    s.moves, s.updated_at
FROM {t.state} s;
-- Whoever could read or write the inventory table keeps doing so through the new objects.
DO $$
DECLARE g record;
BEGIN
    FOR g IN SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS who,
            a.privilege_type AS what
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = '{t.state}'::regclass AND a.grantee <> c.relowner
    LOOP
        IF g.what = 'SELECT' THEN
            EXECUTE format('GRANT SELECT ON {t.inventory} TO %s', g.who);
        ELSIF g.what IN ('INSERT', 'UPDATE') THEN
            EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE {t.epoch} TO %s', g.who);
        END IF;
    END LOOP;
END $$;
"""


async def migrate(conn: Any, t: Tables) -> list[int]:
    """Apply the migrations this table set lacks; returns the versions applied."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {t.schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {t.migrations} (tables text NOT NULL, version integer NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tables, version))"
        )
        rows = await conn.fetch(f"SELECT version FROM {t.migrations} WHERE tables = $1", t.key)
        done = {row["version"] for row in rows}
        for version, sql in migrations(t):
            if version not in done:
                await conn.execute(sql)
                await conn.execute(
                    f"INSERT INTO {t.migrations} (tables, version) VALUES ($1, $2)", t.key, version
                )
                applied.append(version)
    return applied


async def check_writer_schema(conn: Any, t: Tables) -> None:
    """As ``check_schema``, and the schema version must be the one this gpuid writes."""
    await check_schema(conn, t)
    try:
        version = await conn.fetchval(f"SELECT max(version) FROM {t.migrations} WHERE tables = $1", t.key)
    except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedTableError):
        version = None  # a least-privilege user: judge by the objects version 2 created
    extra = [derived(t.names[2], "_state"), derived(t.names[2], "_epoch")]
    if version is None and not await absent(conn, t.names[0], extra):
        version = LATEST
    if version != LATEST:
        newer = version is not None and version > LATEST
        raise LaneError(
            f"postgres: schema of {t.inventory} is at version {version or 1}, this gpuid writes version"
            f" {LATEST}: "
            + (
                "run the newer gpuid, or restore the older schema"
                if newer
                else "set POSTGRES_AUTO_MIGRATE=true once, or have the migration applied (docs/exporters.md)"
            )
        )
