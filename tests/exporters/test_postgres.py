"""PostgreSQL exporter against a real server: history, inventory, moves, outages, secrets."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from gpuid.config import load_settings
from gpuid.delivery.delivery import Delivery
from gpuid.errors import ExportError
from gpuid.exporters.postgres.exporter import PostgresExporter
from gpuid.metrics import Metrics
from gpuid.records import MigDevice
from tests.support.app import eventually, sample
from tests.support.records import delivering, fast_delivery, reading


def exporter_for(env: dict[str, str], **changes: str) -> PostgresExporter:
    return PostgresExporter.from_settings(load_settings(env | changes).exporters)


async def query(pg_server: Any, env: dict[str, str], sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        await conn.execute(f"SET search_path TO {env['POSTGRES_SCHEMA']}")
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_records_land_with_every_field(pg_server: Any, pg_env: dict[str, str]) -> None:
    exporter = exporter_for(pg_env)
    awkward = (  # the MIG column's JSON is written by hand: text that needs escaping, nulls, big ints
        MigDevice('MIG-"quoted"\\back\\slash', "1g.10gb\tä€😀", 2**31 - 1, None),
        MigDevice(None, None, 0, 7),
    )
    batch = [reading(n) for n in range(4)] + [dataclasses.replace(reading(4), mig_devices=awkward)]
    await exporter.open()
    try:
        await exporter.export(batch)
    finally:
        await exporter.close()
    rows = await query(pg_server, pg_env, "SELECT * FROM gpu_readings ORDER BY gpu_index")
    assert len(rows) == 5
    for row, want in zip(rows, batch, strict=True):
        expected = want.to_dict()
        got = dict(row)
        assert json.loads(got.pop("mig_devices")) == expected.pop("mig_devices")
        assert got.pop("observed_at") == datetime.fromisoformat(expected.pop("observed_at"))
        got.pop("ingested_at")
        assert got == expected


async def test_retried_batch_adds_no_rows(pg_server: Any, pg_env: dict[str, str]) -> None:
    exporter = exporter_for(pg_env)
    batch = [reading(n) for n in range(5)] + [reading(0)]  # a duplicate inside the batch too
    await exporter.open()
    try:
        await exporter.export(batch)
        await exporter.export(batch)
    finally:
        await exporter.close()
    (count,) = await query(pg_server, pg_env, "SELECT count(*) AS n FROM gpu_readings")
    assert count["n"] == 5
    inventory = await query(pg_server, pg_env, "SELECT gpu_uuid, moves FROM gpu_inventory")
    assert len(inventory) == 5
    assert all(row["moves"] == 0 for row in inventory)


async def test_inventory_upsert_and_move(pg_server: Any, pg_env: dict[str, str]) -> None:
    exporter = exporter_for(pg_env)
    t1, t2, t3 = "2025-01-01T00:00:00.000Z", "2025-02-01T00:00:00.000Z", "2025-03-01T00:00:00.000Z"
    await exporter.open()
    try:
        with capture_logs() as logs:
            await exporter.export([reading(1, node="node-a", machine="i-a", observed_at=t1)])
            # Same machine under a new node name: not a move.
            await exporter.export([reading(1, node="node-a2", machine="i-a", pod_uid="p2", observed_at=t2)])
            await exporter.export([reading(1, node="node-b", machine="i-b", pod_uid="p3", observed_at=t3)])
            # A replayed old reading from the first machine changes neither place nor moves.
            await exporter.export([reading(1, node="node-a", machine="i-a", pod_uid="p0", observed_at=t1)])
    finally:
        await exporter.close()
    (inv,) = await query(pg_server, pg_env, "SELECT * FROM gpu_inventory")
    assert (inv["node"], inv["machine"], inv["moves"]) == ("node-b", "i-b", 1)
    assert inv["first_seen"] == datetime.fromisoformat(t1)
    assert inv["last_seen"] == datetime.fromisoformat(t3)
    (move,) = await query(pg_server, pg_env, "SELECT * FROM gpu_moves")
    assert (move["from_node"], move["from_machine"], move["to_node"], move["to_machine"]) == (
        "node-a2",
        "i-a",
        "node-b",
        "i-b",
    )
    assert move["previous_seen"] == datetime.fromisoformat(t2)
    moved = [e for e in logs if e["event"] == "gpu_moved"]
    assert len(moved) == 1
    assert moved[0]["gpu_uuid"] == reading(1).gpu_uuid
    assert moved[0]["to_machine"] == "i-b"


async def test_move_falls_back_to_node_without_machine(pg_server: Any, pg_env: dict[str, str]) -> None:
    exporter = exporter_for(pg_env)
    await exporter.open()
    try:
        # Two simulated nodes, no providerID: the node name decides; both in one batch.
        await exporter.export(
            [
                reading(7, node="sim-1", machine=None, observed_at="2025-01-01T00:00:00.000Z"),
                reading(7, node="sim-2", machine=None, pod_uid="p2", observed_at="2025-01-01T01:00:00.000Z"),
            ]
        )
    finally:
        await exporter.close()
    moves = await query(pg_server, pg_env, "SELECT from_node, to_node FROM gpu_moves")
    assert [tuple(m) for m in moves] == [("sim-1", "sim-2")]


async def test_migrations_are_idempotent(pg_server: Any, pg_env: dict[str, str]) -> None:
    for _ in range(2):
        exporter = exporter_for(pg_env)
        await exporter.open()
        await exporter.close()
    rows = await query(pg_server, pg_env, "SELECT version FROM gpuid_schema_migrations")
    assert sorted(r["version"] for r in rows) == [1, 2]  # each version once


async def test_missing_tables_is_a_clear_permanent_error(pg_env: dict[str, str]) -> None:
    exporter = exporter_for(pg_env, POSTGRES_AUTO_MIGRATE="false")
    with pytest.raises(ExportError) as err:
        await exporter.open()
    assert not err.value.transient
    assert "POSTGRES_AUTO_MIGRATE" in str(err.value)
    await exporter.close()


async def test_bad_password_parks_the_lane_keeps_the_record_and_no_secret_is_logged(
    pg_env: dict[str, str],
    pg_password: str,
    log_output: Any,
) -> None:
    wrong = "Wr0ng-pg-Pa55"
    settings = load_settings(pg_env | {"POSTGRES_PASSWORD": wrong})
    exporter = PostgresExporter.from_settings(settings.exporters)
    assert wrong not in repr(exporter.config)
    with pytest.raises(ExportError) as err:
        await exporter.open()
    assert not err.value.transient
    assert "POSTGRES_PASSWORD" in str(err.value)
    assert wrong not in str(err.value)

    metrics = Metrics()
    delivery = Delivery([exporter], metrics, fast_delivery())
    async with delivering(delivery):
        delivery.submit([reading(1)])
        await eventually(lambda: "exporter parked" in log_output.getvalue())
        assert sample(metrics, "gpuid_exporter_up", exporter="postgres") == 0
        assert delivery.waiting() == {"postgres": 1}  # parked, not dropped
        assert sample(metrics, "gpuid_export_dropped_total", exporter="postgres", reason="rejected") == 0
    text = log_output.getvalue()
    assert "POSTGRES_PASSWORD" in text, "the failure must be logged with its hint"
    assert wrong not in text
    assert pg_password not in text


async def test_dsn_password_never_in_errors(pg_server: Any, pg_env: dict[str, str]) -> None:
    secret = "dsn-S3cret-99"
    dsn = f"postgresql://gpuid:{secret}@127.0.0.1:{pg_server.port}/gpuid?sslmode=disable"
    exporter = exporter_for(pg_env, POSTGRES_DSN=dsn)
    assert secret not in repr(exporter.config)
    assert secret not in exporter.config.target
    with pytest.raises(ExportError) as err:
        await exporter.open()
    assert secret not in str(err.value)
    assert not err.value.transient


async def test_down_at_startup_then_back_delivers_everything_once(
    pg_server: Any,
    pg_env: dict[str, str],
) -> None:
    metrics = Metrics()
    pg_server.stop()
    try:
        delivery = Delivery([exporter_for(pg_env)], metrics, fast_delivery(batch_size=7))
        async with delivering(delivery):
            for n in range(30):
                delivery.submit([reading(n)])
            await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="postgres") >= 1)
            assert not delivery.healthy()
            pg_server.start()
            await eventually(delivery.healthy)
            await eventually(lambda: delivery.waiting() == {"postgres": 0})
    finally:
        pg_server.ensure_started()
    (row,) = await query(
        pg_server, pg_env, "SELECT count(*) AS n, count(DISTINCT gpu_uuid) AS u FROM gpu_readings"
    )
    assert (row["n"], row["u"]) == (30, 30)
    assert sample(metrics, "gpuid_export_success_total", exporter="postgres") == 30


async def test_server_restart_mid_run_loses_and_duplicates_nothing(
    pg_server: Any,
    pg_env: dict[str, str],
) -> None:
    metrics = Metrics()
    delivery = Delivery([exporter_for(pg_env)], metrics, fast_delivery(batch_size=10))
    try:
        async with delivering(delivery):
            delivery.submit([reading(n) for n in range(20)])
            await eventually(lambda: delivery.waiting() == {"postgres": 0})
            pg_server.stop()
            delivery.submit([reading(n) for n in range(20, 50)])
            await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="postgres") >= 1)
            pg_server.start()
            await eventually(lambda: delivery.waiting() == {"postgres": 0})
    finally:
        pg_server.ensure_started()
    (row,) = await query(
        pg_server, pg_env, "SELECT count(*) AS n, count(DISTINCT gpu_uuid) AS u FROM gpu_readings"
    )
    assert (row["n"], row["u"]) == (50, 50)


async def test_restart_with_spool_loses_nothing(
    pg_server: Any,
    pg_env: dict[str, str],
    tmp_path: Path,
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nothing_listens = str(sock.getsockname()[1])
    spool = fast_delivery(spool_dir=tmp_path / "spool", batch_size=4)
    down = Delivery([exporter_for(pg_env, POSTGRES_PORT=nothing_listens)], Metrics(), spool)
    async with delivering(down, grace=0.3):
        down.submit([reading(n) for n in range(10)])
        down.submit([reading(n) for n in range(10, 13)])
    assert down.waiting() == {"postgres": 13}
    assert list((tmp_path / "spool" / "postgres").glob("*.jsonl"))

    metrics = Metrics()
    back = Delivery([exporter_for(pg_env)], metrics, spool)
    assert back.waiting() == {"postgres": 13}
    async with delivering(back):
        await eventually(lambda: back.waiting() == {"postgres": 0})
    assert not list((tmp_path / "spool" / "postgres").glob("*.jsonl"))
    (row,) = await query(
        pg_server, pg_env, "SELECT count(*) AS n, count(DISTINCT gpu_uuid) AS u FROM gpu_readings"
    )
    assert (row["n"], row["u"]) == (13, 13)
