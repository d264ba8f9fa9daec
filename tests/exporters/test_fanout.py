"""The whole pipeline against the simulated cluster, fanned out to memory, PostgreSQL and S3."""

from __future__ import annotations

import json
from typing import Any

import aioboto3
import asyncpg

from tests.support.app import GB200, H100, Sim, add_gpu_node, eventually, running_app


async def s3_uuids(env: dict[str, str], create: bool = False) -> list[str]:
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=env["S3_ENDPOINT_URL"], region_name="us-east-1") as s3:
        if create:
            await s3.create_bucket(Bucket=env["S3_BUCKET"])
            return []
        uuids: list[str] = []
        listing = await s3.list_objects_v2(Bucket=env["S3_BUCKET"])
        for item in listing.get("Contents", []):
            body = await (await s3.get_object(Bucket=env["S3_BUCKET"], Key=item["Key"]))["Body"].read()
            uuids += [json.loads(line)["gpu_uuid"] for line in body.decode().splitlines()]
        return uuids


async def pg_uuids(pg_server: Any, schema: str) -> list[str]:
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        return [r["gpu_uuid"] for r in await conn.fetch(f"SELECT gpu_uuid FROM {schema}.gpu_readings")]
    finally:
        await conn.close()


async def test_same_gpus_everywhere_across_a_postgres_restart(
    sim: Sim, pg_server: Any, pg_env: dict[str, str], s3_env: dict[str, str]
) -> None:
    await s3_uuids(s3_env, create=True)
    add_gpu_node(sim, "n1", H100)
    add_gpu_node(sim, "n2", GB200)
    env = pg_env | s3_env | {"EXPORTER_TYPE": "postgres,s3", "EXPORT_RETRY_MAX_BACKOFF": "0.2s"}
    try:
        async with running_app(sim, **env) as run:
            delivery = run.app.delivery
            everything_sent = {"memory": 0, "postgres": 0, "s3": 0}
            await eventually(lambda: len(run.memory.records) == 12, what="12 records")
            await eventually(lambda: delivery.waiting() == everything_sent and delivery.healthy())
            pg_server.stop()
            add_gpu_node(sim, "n3", H100)  # n1's GPUs, as if its board had been moved to n3
            await eventually(lambda: len(run.memory.records) == 20, what="8 more records")
            await eventually(lambda: run.sample("gpuid_export_failure_total", exporter="postgres") >= 1)
            assert not delivery.healthy()
            pg_server.start()
            await eventually(lambda: delivery.waiting() == everything_sent, what="postgres to catch up")
    finally:
        pg_server.ensure_started()
    expected = sorted(run.uuids())
    assert len(expected) == 20
    assert sorted(await pg_uuids(pg_server, pg_env["POSTGRES_SCHEMA"])) == expected
    assert sorted(await s3_uuids(s3_env)) == expected
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        moves = await conn.fetch(f"SELECT from_node, to_node FROM {pg_env['POSTGRES_SCHEMA']}.gpu_moves")
    finally:
        await conn.close()
    assert [tuple(m) for m in moves] == [("n1", "n3")] * 8
