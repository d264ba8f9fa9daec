# ruff: noqa: S608 - table names are validated identifiers, quoted; every value is a bind parameter
"""PostgreSQL schema of gpuid: table names, columns, and the statements the writer runs.

Names are configurable (``POSTGRES_*_TABLE``) and validated as identifiers
before they are ever quoted into SQL; every value is a bind parameter (the
writers' advisory lock key, an integer gpuid derives, is the one literal). From schema
version 2 (``pg_migrations``) the inventory rows live in ``<inventory>_state``,
written only when a GPU's place or identity changes; ``<inventory>`` is a view
of it whose ``last_seen`` is the newest reading in the history; and
``<inventory>_epoch`` counts inventory changes, so a writer can tell whether
what it cached is still exact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuid.errors import ConfigError, LaneError
from gpuid.exporters.postgres.fold import FACETS, MOVE_COLUMNS, ROW_COLUMNS
from gpuid.exporters.postgres.settings import PostgresSettings

MIGRATIONS_TABLE = "gpuid_schema_migrations"
_NAME_MAX = 63  # PostgreSQL truncates longer identifiers

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
# Columns of the inventory state table (version 2), in the order the exporter writes them.
STATE_COLUMNS = (
    "cluster",
    "gpu_uuid",
    "gpu_serial",
    "chassis_serial",
    "product_name",
    "board_part_number",
    "node",
    "machine",
    "module_id",
    "gpu_index",
    "pci_bus_id",
    "driver_version",
    "source",
    "first_seen",
    "changed_at",
    "moves",
)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def derived(name: str, suffix: str) -> str:
    """``name`` + ``suffix``, shortened so PostgreSQL does not truncate it into another name."""
    return name[: _NAME_MAX - len(suffix)] + suffix


@dataclass(frozen=True)
class Tables:
    """Schema-qualified, quoted names, ready to put in SQL."""

    schema: str
    readings: str
    inventory: str  # a view from version 2 on (a table in version 1)
    moves: str
    migrations: str
    state: str
    epoch: str
    names: tuple[str, str, str, str]  # schema, readings, inventory, moves, unquoted
    state_table: str  # unquoted

    @classmethod
    def from_settings(cls, config: PostgresSettings) -> Tables:
        s, inventory = quote(config.schema), config.inventory_table
        names = (config.schema, config.readings_table, inventory, config.moves_table)
        extra = (derived(inventory, "_state"), derived(inventory, "_epoch"))
        if set(extra) & set(names[1:]):
            raise ConfigError(
                f"POSTGRES_INVENTORY_TABLE={inventory!r}: gpuid also uses {' and '.join(extra)},"
                " which must differ from the other table names"
            )
        return cls(
            schema=s,
            readings=f"{s}.{quote(config.readings_table)}",
            inventory=f"{s}.{quote(inventory)}",
            moves=f"{s}.{quote(config.moves_table)}",
            migrations=f"{s}.{quote(MIGRATIONS_TABLE)}",
            state=f"{s}.{quote(extra[0])}",
            epoch=f"{s}.{quote(extra[1])}",
            names=names,
            state_table=extra[0],
        )

    @property
    def key(self) -> str:
        """Which table set a migration row belongs to (several may share a schema)."""
        return ",".join(self.names[1:])


class Statements:
    """The SQL of the writer for one table set."""

    def __init__(self, t: Tables) -> None:
        digest = hashlib.blake2b(f"gpuid writers {t.schema}.{t.key}".encode(), digest_size=8).digest()
        self.lock = int.from_bytes(digest, "big", signed=True)  # the writers' advisory lock, per table set
        self.begin_shared = f"BEGIN; SELECT pg_advisory_xact_lock_shared({self.lock})"
        self.begin_exclusive = f"BEGIN; SELECT pg_advisory_xact_lock({self.lock})"
        self.epoch = f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {t.epoch}"
        self.bump = f"SELECT nextval('{t.epoch}')"
        # Keys travel as two JSON arrays (asyncpg encodes a string far faster than a text[]);
        # LATERAL ... OFFSET 0 makes one index probe per GPU, never a scan of the whole inventory.
        keys = (
            "ROWS FROM (json_array_elements_text($1::json), json_array_elements_text($2::json))"
            " AS k(cluster, gpu_uuid)"
        )
        columns = ", ".join(f"s.{c}" for c in ("cluster", "gpu_uuid", "source", *FACETS))
        self.current = (
            f"SELECT {columns}, s.first_seen, s.changed_at, s.moves FROM {keys} CROSS JOIN LATERAL"
            f" (SELECT * FROM {t.state} s WHERE s.cluster = k.cluster AND s.gpu_uuid = k.gpu_uuid OFFSET 0) s"
        )
        self.newest = (
            f"SELECT k.cluster, k.gpu_uuid, (SELECT max(r.observed_at) FROM {t.readings} r"
            f" WHERE r.cluster = k.cluster AND r.gpu_uuid = k.gpu_uuid) FROM {keys}"
        )
        # Rows to merge are COPY'd into temp tables (per connection, emptied at commit), again because
        # asyncpg encodes COPY rows far faster than array parameters.
        self.stages = {
            "gpuid_stage": _stage("gpuid_stage", t.readings, ROW_COLUMNS),
            "gpuid_state_stage": _stage("gpuid_state_stage", t.state, STATE_COLUMNS),
            "gpuid_move_stage": _stage("gpuid_move_stage", t.moves, MOVE_COLUMNS),
        }
        readings, moves = ", ".join(ROW_COLUMNS), ", ".join(MOVE_COLUMNS)
        self.merge = {  # a replayed batch skips the readings already stored; so does a replayed move
            "gpuid_stage": f"INSERT INTO {t.readings} ({readings})"
            f" SELECT {readings} FROM gpuid_stage ON CONFLICT DO NOTHING",
            "gpuid_state_stage": f"UPDATE {t.state} AS s"
            f" SET {', '.join(f'{c} = v.{c}' for c in STATE_COLUMNS[2:])}, updated_at = now()"
            " FROM gpuid_state_stage v WHERE s.cluster = v.cluster AND s.gpu_uuid = v.gpu_uuid",
            "gpuid_move_stage": f"INSERT INTO {t.moves} ({moves})"
            f" SELECT {moves} FROM gpuid_move_stage ON CONFLICT DO NOTHING",
        }


def _stage(name: str, like: str, columns: Sequence[str]) -> str:
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS"
        f" AS SELECT {', '.join(columns)} FROM {like} WITH NO DATA"
    )


async def absent(conn: Any, schema: str, names: list[str]) -> list[str]:
    return [
        name
        for name in names
        if await conn.fetchval("SELECT to_regclass($1)", f"{quote(schema)}.{quote(name)}") is None
    ]


async def check_schema(conn: Any, t: Tables) -> None:
    """Fail clearly (a lane error) when the tables readers and writers need are not there."""
    schema, *tables = t.names
    if missing := await absent(conn, schema, tables):
        raise LaneError(
            f"postgres: table(s) {', '.join(f'{schema}.{n}' for n in missing)} missing:"
            " set POSTGRES_AUTO_MIGRATE=true once, or create them (docs/exporters.md, PostgreSQL)"
        )
