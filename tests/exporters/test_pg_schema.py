"""Schema version 2: a version 1 database with rows upgrades in place, and keeps answering queries."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from gpuid.config import inventory_settings, load_settings
from gpuid.errors import LaneError
from gpuid.exporters.postgres.exporter import PostgresExporter
from gpuid.exporters.postgres.migrations import migrate, migrations
from gpuid.exporters.postgres.schema import MIGRATIONS_TABLE, Tables
from gpuid.inventory import add_inventory_parser, run_inventory
from tests.support.records import reading

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)  # whole seconds, as the CLI prints


def at(hours: int) -> str:
    return (T0 + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def when(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


async def version_1(conn: Any, t: Tables) -> None:
    """What gpuid created before version 2: migration 1 exactly as it shipped."""
    await conn.execute(f"CREATE SCHEMA {t.schema}")
    await conn.execute(
        f"CREATE TABLE {t.migrations} (tables text NOT NULL, version integer NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tables, version))"
    )
    (version, sql), *_ = migrations(t)
    await conn.execute(sql)
    await conn.execute(f"INSERT INTO {t.migrations} (tables, version) VALUES ($1, $2)", t.key, version)


async def v1_rows(conn: Any, t: Tables) -> None:
    """GPU 1 moved node-a -> node-b at hour 2; GPU 2 sits in node-a: as the version 1 writer left them."""
    readings = [
        reading(1, node="node-a", machine="i-a", pod_uid="p0", observed_at=at(0)),
        reading(1, node="node-a", machine="i-a", pod_uid="p1", observed_at=at(1)),
        reading(1, node="node-b", machine="i-b", pod_uid="p2", observed_at=at(2)),
        reading(2, node="node-a", machine="i-a", pod_uid="p1", observed_at=at(1)),
    ]
    columns = [f.name for f in dataclasses.fields(readings[0])]
    await conn.copy_records_to_table(
        t.names[1],
        schema_name=t.names[0],
        columns=columns,
        records=[
            (*(getattr(r, c) for c in columns[:-2]), json.dumps([]), datetime.fromisoformat(r.observed_at))
            for r in readings
        ],
    )
    for r, first, last, moves in ((readings[2], 0, 2, 1), (readings[3], 1, 1, 0)):
        await conn.execute(
            f"INSERT INTO {t.inventory} (cluster, gpu_uuid, gpu_serial, product_name, node, machine,"
            " gpu_index, first_seen, last_seen, moves) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            *(r.cluster, r.gpu_uuid, r.gpu_serial, r.product_name, r.node, r.machine, r.gpu_index),
            *(when(first), when(last), moves),
        )
    await conn.execute(
        f"INSERT INTO {t.moves} (cluster, gpu_uuid, gpu_serial, from_node, from_machine, to_node,"
        " to_machine, previous_seen, moved_at) VALUES ($1, $2, $3, 'node-a', 'i-a', 'node-b', 'i-b', $4, $5)",
        readings[0].cluster,
        readings[0].gpu_uuid,
        readings[0].gpu_serial,
        when(1),
        when(2),
    )


async def cli(env: dict[str, str], *argv: str) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="gpuid")
    add_inventory_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = await run_inventory(
        parser.parse_args(["inventory", *argv, "--json"]), inventory_settings(env), out=out
    )
    assert code == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_a_version_1_database_a_dba_manages_upgrades_in_place(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    env = pg_env | {"POSTGRES_AUTO_MIGRATE": "false"}
    t = Tables.from_settings(load_settings(env).exporters.postgres)
    schema = env["POSTGRES_SCHEMA"]
    owner = await asyncpg.connect(pg_server.dsn())  # the DBA: gpuid gets only what README grants
    try:
        await version_1(owner, t)
        await v1_rows(owner, t)
        await owner.execute(
            f"GRANT USAGE ON SCHEMA {schema} TO gpuid;"
            f" GRANT SELECT, INSERT, UPDATE ON {t.readings}, {t.inventory}, {t.moves} TO gpuid"
        )
        exporter = PostgresExporter.from_settings(load_settings(env).exporters)
        with pytest.raises(LaneError, match="version 1"):
            await exporter.open()
        assert await migrate(owner, t) == [2]
        assert await migrate(owner, t) == []
        key = await owner.fetchval(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::regclass AND indisprimary",
            t.readings,
        )
        assert "(gpu_uuid, cluster, observed_at, pod_uid, gpu_index)" in key
        assert await owner.fetchval(f"SELECT count(*) FROM {t.readings}") == 4
    finally:
        await owner.close()

    # Before writing anything, the old rows read as they did.
    (gpu1,) = await cli(env, "where", reading(1).gpu_serial)
    assert (gpu1["node"], gpu1["moves"], gpu1["last_seen"]) == ("node-b", 1, at(2))
    assert [m["to_node"] for m in await cli(env, "moves", "--since", "7d")] == ["node-b"]

    exporter = PostgresExporter.from_settings(load_settings(env).exporters)
    await exporter.open()  # as the least-privileged user: the migration passed its grants on
    try:
        await exporter.export(
            [
                reading(1, node="node-b", machine="i-b", pod_uid="p3", observed_at=at(3)),
                reading(2, node="node-c", machine="i-c", pod_uid="p4", observed_at=at(3)),
            ]
        )
        twin = reading(1, node="node-b", machine="i-b", pod_uid="p5", observed_at=at(4))
        await exporter.export([twin, dataclasses.replace(twin, gpu_index=7, gpu_serial="twin")])
    finally:
        await exporter.close()

    rows = {r["gpu_uuid"]: r for r in await cli(env, "node", "node-b") + await cli(env, "node", "node-c")}
    gpu1, gpu2 = rows[reading(1).gpu_uuid], rows[reading(2).gpu_uuid]
    assert (gpu1["moves"], gpu1["first_seen"], gpu1["last_seen"]) == (1, at(0), at(4))
    assert (gpu2["node"], gpu2["moves"], gpu2["last_seen"]) == ("node-c", 1, at(3))
    moves = await cli(env, "moves", "--since", "7d")
    assert [(m["from_node"], m["to_node"]) for m in moves] == [("node-a", "node-c"), ("node-a", "node-b")]
    assert [g["gpu_uuid"] for g in await cli(env, "stale", "--older-than", "1h")] == [
        gpu2["gpu_uuid"],
        gpu1["gpu_uuid"],
    ]
    assert await cli(env, "stale", "--older-than", "4d") == []


async def test_auto_migrate_upgrades_the_tables_gpuid_owns(pg_server: Any, pg_env: dict[str, str]) -> None:
    t = Tables.from_settings(load_settings(pg_env).exporters.postgres)
    conn = await asyncpg.connect(pg_server.dsn(user="gpuid"), password=pg_env["POSTGRES_PASSWORD"])
    try:
        await version_1(conn, t)
        await v1_rows(conn, t)
    finally:
        await conn.close()
    exporter = PostgresExporter.from_settings(load_settings(pg_env).exporters)
    await exporter.open()
    try:
        await exporter.export([reading(2, node="node-a", machine="i-a", pod_uid="p9", observed_at=at(5))])
    finally:
        await exporter.close()
    (gpu2,) = await cli(pg_env, "where", reading(2).gpu_uuid)
    assert (gpu2["node"], gpu2["first_seen"], gpu2["last_seen"]) == ("node-a", at(1), at(5))
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        versions = await conn.fetch(
            f"SELECT version FROM {pg_env['POSTGRES_SCHEMA']}.{MIGRATIONS_TABLE} ORDER BY version"
        )
    finally:
        await conn.close()
    assert [v["version"] for v in versions] == [1, 2]
