"""The grants docs/exporters.md tells a DBA to give are exactly enough for gpuid to write."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import asyncpg

from gpuid.config import load_settings
from gpuid.exporters.postgres.exporter import PostgresExporter
from tests.support.records import reading
from tests.support.services import PG_PASSWORD, PostgresServer

DOCS = Path(__file__).parent.parent.parent / "docs" / "exporters.md"


def documented_grants() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)\n```", DOCS.read_text(), flags=re.S)
    [grants] = [b for b in blocks if "GRANT" in b]
    return [line for line in grants.splitlines() if line.startswith("GRANT")]


async def test_the_documented_grants_let_gpuid_write_history_inventory_and_moves(
    pg_server: PostgresServer,
) -> None:
    database = f"docs_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(host="127.0.0.1", port=pg_server.port, user="postgres", database="postgres")
    await admin.execute(f"CREATE DATABASE {database}")
    await admin.close()
    env = {
        "CLUSTER_NAME": "test",
        "EXPORTER_TYPE": "postgres",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(pg_server.port),
        "POSTGRES_DB": database,
    }
    dba = PostgresExporter.from_settings(
        load_settings(env | {"POSTGRES_USER": "postgres", "POSTGRES_AUTO_MIGRATE": "true"}).exporters
    )
    await dba.open()  # the DBA runs the migrations once
    await dba.close()
    owner = await asyncpg.connect(host="127.0.0.1", port=pg_server.port, user="postgres", database=database)
    for grant in documented_grants():
        await owner.execute(grant.replace("DATABASE gpuid ", f"DATABASE {database} "))
    writer = PostgresExporter.from_settings(
        load_settings(env | {"POSTGRES_USER": "gpuid", "POSTGRES_PASSWORD": PG_PASSWORD}).exporters
    )
    await writer.open()
    try:
        await writer.export([reading(n, observed_at="2025-01-01T00:00:00.000Z") for n in range(4)])  # new
        await writer.export([reading(n, observed_at="2025-01-01T01:00:00.000Z") for n in range(4)])  # steady
        moved = [
            reading(n, node="node-b", machine="i-b", observed_at="2025-01-01T02:00:00.000Z") for n in range(4)
        ]
        await writer.export(moved)  # every GPU moved
    finally:
        await writer.close()
    assert await owner.fetchval("SELECT count(*) FROM gpu_readings") == 12
    assert await owner.fetchval("SELECT count(*) FROM gpu_moves") == 4
    assert await owner.fetchval("SELECT count(*) FROM gpu_inventory WHERE node = 'node-b'") == 4
    await owner.close()
