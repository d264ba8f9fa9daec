# ruff: noqa: S608 - table names are validated identifiers, quoted; every value is a bind parameter
"""PostgreSQL schema of gpuid: table names, versioned migrations, schema check.

Three tables, names configurable (``POSTGRES_*_TABLE``) and validated as
identifiers before they are ever quoted into SQL; every value is a bind
parameter. Migrations are opt-in (``POSTGRES_AUTO_MIGRATE``) so a DBA can run
them once and grant gpuid INSERT/UPDATE only; they are idempotent, numbered,
and serialised across replicas by an advisory lock. Append a migration, never
edit one that has shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuid.errors import ExportError
from gpuid.exporters.postgres.settings import PostgresSettings

MIGRATIONS_TABLE = "gpuid_schema_migrations"
_LOCK_KEY = 0x67707569_64000001  # pg_advisory_xact_lock key: "gpuid" + 1

# (column, type) of the readings table in record order: COPY and the stage table use it.
READING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cluster", "text NOT NULL"),
    ("node", "text NOT NULL"),
    ("machine", "text"),
    ("source", "text NOT NULL"),
    ("pod_uid", "text NOT NULL"),
    ("gpu_uuid", "text NOT NULL"),
    ("gpu_serial", "text"),
    ("chassis_serial", "text"),
    ("module_id", "integer"),
    ("gpu_index", "integer NOT NULL"),
    ("pci_bus_id", "text"),
    ("product_name", "text"),
    ("product_architecture", "text"),
    ("board_part_number", "text"),
    ("vbios_version", "text"),
    ("driver_version", "text"),
    ("cuda_version", "text"),
    ("mig_mode", "text"),
    ("mig_devices", "jsonb NOT NULL"),
    ("observed_at", "timestamptz NOT NULL"),
)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Tables:
    """Schema-qualified, quoted table names, ready to put in SQL."""

    schema: str
    readings: str
    inventory: str
    moves: str
    migrations: str
    names: tuple[str, str, str, str]  # schema, readings, inventory, moves, unquoted

    @classmethod
    def from_settings(cls, config: PostgresSettings) -> Tables:
        s = quote(config.schema)
        return cls(
            schema=s,
            readings=f"{s}.{quote(config.readings_table)}",
            inventory=f"{s}.{quote(config.inventory_table)}",
            moves=f"{s}.{quote(config.moves_table)}",
            migrations=f"{s}.{quote(MIGRATIONS_TABLE)}",
            names=(config.schema, config.readings_table, config.inventory_table, config.moves_table),
        )

    @property
    def key(self) -> str:
        """Which table set a migration row belongs to (several may share a schema)."""
        return ",".join(self.names[1:])


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
    return [(1, v1)]


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


async def check_schema(conn: Any, t: Tables) -> None:
    """Fail clearly (and permanently) when the tables are not there."""
    schema, *tables = t.names
    missing = [
        name
        for name in tables
        if await conn.fetchval("SELECT to_regclass($1)", f"{quote(schema)}.{quote(name)}") is None
    ]
    if missing:
        raise ExportError(
            f"postgres: table(s) {', '.join(f'{schema}.{n}' for n in missing)} missing:"
            " set POSTGRES_AUTO_MIGRATE=true once, or create them (docs/exporters.md, PostgreSQL)",
            transient=False,
        )
