"""The PostgreSQL fast path against a real server: exact and idempotent under replay and concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from gpuid.config import load_settings
from gpuid.delivery.delivery import Delivery
from gpuid.errors import ConfigError
from gpuid.exporters import build_exporters
from gpuid.exporters.postgres.exporter import PostgresExporter, fast_timestamps
from gpuid.metrics import Metrics
from gpuid.records import GPUReading
from tests.support.app import eventually, sample
from tests.support.records import delivering, fast_delivery, reading

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def when(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def sweep(gpus: range, minutes: int, *, node: str = "node-a") -> list[GPUReading]:
    """One scan of ``gpus`` on ``node`` (machine named after it) at ``minutes``."""
    return [
        reading(n, node=node, machine=f"i-{node}", pod_uid=f"{node}-{minutes}", observed_at=at(minutes))
        for n in gpus
    ]


async def opened(env: dict[str, str]) -> PostgresExporter:
    exporter = PostgresExporter.from_settings(load_settings(env).exporters)
    await exporter.open()
    return exporter


async def fetch(pg_server: Any, env: dict[str, str], sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        await conn.execute(f"SET search_path TO {env['POSTGRES_SCHEMA']}")
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def snapshot(pg_server: Any, env: dict[str, str]) -> dict[str, Any]:
    """Everything the exporter wrote, plus the row versions of the inventory (xmin)."""
    return {
        "readings": await fetch(pg_server, env, "SELECT count(*) AS n FROM gpu_readings"),
        "inventory": await fetch(
            pg_server,
            env,
            "SELECT i.*, s.xmin::text AS version FROM gpu_inventory i"
            " JOIN gpu_inventory_state s USING (cluster, gpu_uuid) ORDER BY gpu_uuid",
        ),
        "moves": await fetch(pg_server, env, "SELECT * FROM gpu_moves ORDER BY gpu_uuid, moved_at"),
    }


async def test_steady_sightings_write_history_only_and_replays_add_nothing(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    exporter = await opened(pg_env)
    try:
        await exporter.export(sweep(range(20), 0))
        before = await snapshot(pg_server, pg_env)
        again = sweep(range(20), 10)
        await exporter.export(again)
        after = await snapshot(pg_server, pg_env)
        await exporter.export(again)  # the same batch twice: a replay
        await exporter.export(again[5:] + sweep(range(20, 25), 10))  # overlapping
    finally:
        await exporter.close()
    assert after["readings"][0]["n"] == 40
    # Known GPUs seen again where they were: the inventory rows were not even rewritten...
    assert [r["version"] for r in after["inventory"]] == [r["version"] for r in before["inventory"]]
    # ...yet the inventory says when each was last seen.
    assert {r["last_seen"] for r in after["inventory"]} == {when(10)}
    assert {r["first_seen"] for r in after["inventory"]} == {when(0)}
    final = await snapshot(pg_server, pg_env)
    assert final["readings"][0]["n"] == 45
    assert len(final["inventory"]) == 25
    assert final["moves"] == []


async def test_replay_by_a_restarted_exporter_changes_nothing(pg_server: Any, pg_env: dict[str, str]) -> None:
    batches = [
        sweep(range(8), 0),
        sweep(range(8), 10, node="node-b"),
        sweep(range(8), 20, node="node-b"),
    ]
    exporter = await opened(pg_env)
    try:
        for batch in batches:
            await exporter.export(batch)
    finally:
        await exporter.close()
    before = await snapshot(pg_server, pg_env)
    restarted = await opened(pg_env)  # an empty cache: at-least-once delivery replays everything
    try:
        with capture_logs() as logs:
            for batch in [*batches, batches[1][:3] + batches[2][3:]]:
                await restarted.export(batch)
    finally:
        await restarted.close()
    assert await snapshot(pg_server, pg_env) == before
    assert not [e for e in logs if e["event"] == "gpu_moved"]
    assert len(before["moves"]) == 8
    assert all(m["previous_seen"] == when(0) and m["moved_at"] == when(10) for m in before["moves"])


async def test_out_of_order_batches_never_move_a_gpu_back(pg_server: Any, pg_env: dict[str, str]) -> None:
    a0, b30, a20, a10 = (
        sweep(range(4), 0),
        sweep(range(4), 30, node="node-b"),
        sweep(range(4), 20),
        sweep(range(4), 10),
    )
    exporter = await opened(pg_env)
    try:
        await exporter.export(a0)
        await exporter.export(b30)  # newest first: the move A -> B
        await exporter.export(a20)  # then older readings from A: history only
        await exporter.export(a10 + a20)
        await exporter.export(b30)
    finally:
        await exporter.close()
    final = await snapshot(pg_server, pg_env)
    assert final["readings"][0]["n"] == 16
    assert {(r["node"], r["last_seen"], r["first_seen"], r["moves"]) for r in final["inventory"]} == {
        ("node-b", when(30), when(0), 1)
    }
    assert {(m["from_node"], m["to_node"], m["previous_seen"], m["moved_at"]) for m in final["moves"]} == {
        ("node-a", "node-b", when(0), when(30))
    }
    assert len(final["moves"]) == 4


async def test_a_late_reading_from_elsewhere_loses_to_a_newer_sighting_kept_in_history_only(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    """The inventory row was last written at minute 0; minute 20 (same place) went to history only."""
    exporter = await opened(pg_env)
    try:
        await exporter.export(sweep(range(3), 0))
        await exporter.export(sweep(range(3), 20))
        late = await opened(pg_env)  # e.g. the previous leader flushing its queue
        try:
            await late.export(sweep(range(3), 10, node="node-b"))
        finally:
            await late.close()
        await exporter.export(sweep(range(3), 10, node="node-b"))
    finally:
        await exporter.close()
    final = await snapshot(pg_server, pg_env)
    assert final["moves"] == []
    assert {(r["node"], r["last_seen"], r["moves"]) for r in final["inventory"]} == {("node-a", when(20), 0)}
    assert final["readings"][0]["n"] == 9


async def test_a_move_by_another_writer_is_seen_through_a_warm_cache(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    """X caches 'GPU in A'; Y moves it to B; X's newer reading from A is a move back, not a no-op."""
    x, y = await opened(pg_env), await opened(pg_env)
    try:
        await x.export(sweep(range(3), 0))
        await x.export(sweep(range(3), 5))  # warm: X would take the fast path for A
        await y.export(sweep(range(3), 10, node="node-b"))
        await x.export(sweep(range(3), 20))
        await x.export(sweep(range(3), 15))  # older than both: history only
    finally:
        await x.close()
        await y.close()
    final = await snapshot(pg_server, pg_env)
    assert {(r["node"], r["last_seen"], r["moves"]) for r in final["inventory"]} == {("node-a", when(20), 2)}
    assert sorted({(m["from_node"], m["to_node"], m["moved_at"]) for m in final["moves"]}) == [
        ("node-a", "node-b", when(10)),
        ("node-b", "node-a", when(20)),
    ]


async def test_two_exporters_writing_interleaved_sightings_move_each_gpu_exactly_once(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    gpus = range(40)
    scans = {m: sweep(gpus, m, node="node-a" if m < 40 else "node-b") for m in range(0, 70, 10)}
    writers = [await opened(pg_env), await opened(pg_env)]
    try:
        await writers[0].export(scans[0])
        for w in writers:  # both caches warm, so both start on the fast path
            await w.export(scans[10])
        rng = random.Random(7)
        # Each writer gets every later scan in its own shuffled order, cut into uneven batches:
        # the move scan (40) reaches both, and the replicas race on every GPU.
        plans = []
        for _ in writers:
            readings = [r for m in (20, 30, 40, 50, 60) for r in scans[m]]
            rng.shuffle(readings)
            cuts = sorted(rng.sample(range(1, len(readings)), 6))
            plans.append([readings[i:j] for i, j in zip([0, *cuts], [*cuts, len(readings)], strict=True)])

        async def deliver(writer: PostgresExporter, batches: list[list[GPUReading]]) -> None:
            for batch in batches:
                await writer.export(batch)
                await asyncio.sleep(rng.random() / 100)

        with capture_logs() as logs:
            await asyncio.gather(*(deliver(w, p) for w, p in zip(writers, plans, strict=True)))
    finally:
        for w in writers:
            await w.close()
    final = await snapshot(pg_server, pg_env)
    assert final["readings"][0]["n"] == 40 * 7
    assert {(r["node"], r["last_seen"], r["first_seen"], r["moves"]) for r in final["inventory"]} == {
        ("node-b", when(60), when(0), 1)
    }
    assert len(final["moves"]) == 40
    assert {(m["from_node"], m["to_node"]) for m in final["moves"]} == {("node-a", "node-b")}
    # Whichever B reading arrived first made the move; before it, the GPU was last seen in A.
    assert all(m["previous_seen"] < m["moved_at"] for m in final["moves"])
    assert len([e for e in logs if e["event"] == "gpu_moved"]) == 40


async def test_two_gpus_claiming_one_uuid_are_two_history_rows(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    def scan(minutes: int) -> list[GPUReading]:
        first = reading(9, pod_uid=f"p{minutes}", observed_at=at(minutes))
        twin = dataclasses.replace(first, gpu_index=5, pci_bus_id="00000000:99:00.0", gpu_serial="twin")
        return [twin, first]

    exporter = await opened(pg_env)
    try:
        await exporter.export(scan(0))
        before = await snapshot(pg_server, pg_env)
        await exporter.export(scan(10))
        await exporter.export(scan(10))
    finally:
        await exporter.close()
    rows = await fetch(pg_server, pg_env, "SELECT gpu_index, gpu_serial FROM gpu_readings ORDER BY 1, 2")
    assert [tuple(r) for r in rows] == [(1, reading(9).gpu_serial)] * 2 + [(5, "twin")] * 2
    final = await snapshot(pg_server, pg_env)
    (inv,) = final["inventory"]
    assert (inv["gpu_index"], inv["last_seen"], inv["moves"]) == (1, when(10), 0)
    assert inv["version"] == before["inventory"][0]["version"]  # the next scan changed nothing


async def test_half_replayed_and_stale_cache_batches_stay_exact(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    """A batch half of which is stored already, and one that meets a stale cache, on the fast path."""
    gpus = range(1200)
    x, y = await opened(pg_env), await opened(pg_env)
    try:
        await x.export(sweep(gpus, 0))
        seen = sweep(gpus, 10)
        await x.export(seen)
        before = await snapshot(pg_server, pg_env)
        await x.export(seen[:600] + sweep(gpus, 20)[600:])
        assert (await snapshot(pg_server, pg_env))["readings"][0]["n"] == 3000
        await y.export(sweep(range(5, 6), 25, node="node-b"))  # X's cache is now stale
        await x.export(sweep(gpus, 30))
    finally:
        await x.close()
        await y.close()
    final = await snapshot(pg_server, pg_env)
    assert final["readings"][0]["n"] == 3000 + 1 + 1200
    moved = [r for r in final["inventory"] if r["moves"]]
    assert [(r["gpu_uuid"], r["node"], r["moves"]) for r in moved] == [(reading(5).gpu_uuid, "node-a", 2)]
    assert [(m["from_node"], m["to_node"], m["moved_at"]) for m in final["moves"]] == [
        ("node-a", "node-b", when(25)),
        ("node-b", "node-a", when(30)),
    ]
    unchanged = [r["version"] for r in final["inventory"] if not r["moves"]]
    assert unchanged == [r["version"] for r in before["inventory"] if r["gpu_uuid"] != reading(5).gpu_uuid]


async def test_a_change_the_cache_sample_misses_is_still_folded(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    """Only a few rows decide the history-only path; the rest is checked before COMMIT."""
    exporter = await opened(pg_env)
    try:
        await exporter.export(sweep(range(5), 0))
        upgraded = sweep(range(5), 10)
        upgraded[1] = dataclasses.replace(upgraded[1], driver_version="570.86.15")  # not first, middle, last
        await exporter.export(upgraded)
        await exporter.export(upgraded)  # and a replay of it
    finally:
        await exporter.close()
    final = await snapshot(pg_server, pg_env)
    assert final["readings"][0]["n"] == 10
    assert [r["driver_version"] for r in final["inventory"]] == ["550.54.15", "570.86.15", *["550.54.15"] * 3]
    assert final["moves"] == []


async def test_two_writers_meeting_the_same_new_gpus_store_each_once(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    x, y = await opened(pg_env), await opened(pg_env)
    try:
        await asyncio.gather(
            *(x.export(sweep(range(i, i + 10), 0)) for i in range(0, 40, 10)),
            *(y.export(sweep(range(i, i + 10), 5)) for i in range(30, -10, -10)),
        )
        # Each now believes in GPUs the other inserted: both must still take the right path.
        await asyncio.gather(x.export(sweep(range(40), 10)), y.export(sweep(range(40), 15)))
    finally:
        await x.close()
        await y.close()
    final = await snapshot(pg_server, pg_env)
    assert final["readings"][0]["n"] == 160
    assert {(r["first_seen"], r["last_seen"], r["moves"]) for r in final["inventory"]} == {
        (when(0), when(15), 0)
    }
    assert len(final["inventory"]) == 40
    assert final["moves"] == []


async def test_the_postgres_lane_sends_batches_of_postgres_batch_size(pg_env: dict[str, str]) -> None:
    settings = load_settings(pg_env | {"POSTGRES_BATCH_SIZE": "300", "EXPORT_BATCH_SIZE": "50"})
    [exporter] = build_exporters(settings.exporters)
    metrics = Metrics()
    delivery = Delivery([exporter], metrics, fast_delivery(batch_size=50))
    async with delivering(delivery):
        delivery.submit([reading(n) for n in range(600)])
        await eventually(lambda: sample(metrics, "gpuid_export_success_total", exporter="postgres") == 600)
    # two transactions of 300, not twelve of 50
    assert sample(metrics, "gpuid_export_duration_seconds_count", exporter="postgres") == 2


def test_a_postgres_batch_larger_than_the_queue_is_refused(pg_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="POSTGRES_BATCH_SIZE=20000 is invalid"):
        load_settings(pg_env | {"POSTGRES_BATCH_SIZE": "20000", "EXPORT_QUEUE_SIZE": "10000"})


async def test_timestamps_encode_and_decode_as_asyncpg_does(pg_server: Any) -> None:
    """The memoised timestamptz codec of the writer's connections stores and reads back exactly
    what asyncpg's own codec does: microseconds, before 2000, other offsets, infinity."""
    values = [
        datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # before PostgreSQL's epoch
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime.fromisoformat("2025-06-01T05:30:00.000001+05:30"),
        datetime(1, 1, 1, tzinfo=UTC),
    ]
    fast, plain = await asyncpg.connect(pg_server.dsn()), await asyncpg.connect(pg_server.dsn())
    try:
        await fast_timestamps(fast)
        await plain.execute("CREATE TEMP TABLE t (i int, at timestamptz)")
        await fast.execute("CREATE TEMP TABLE t (i int, at timestamptz)")
        for conn in (fast, plain):
            for _ in range(2):  # the second time from the memo
                await conn.copy_records_to_table("t", records=list(enumerate(values)))
        as_text = "SELECT at::text FROM t ORDER BY i, ctid"
        assert [r[0] for r in await fast.fetch(as_text)] == [r[0] for r in await plain.fetch(as_text)]
        decoded = [r[0] for r in await fast.fetch("SELECT at FROM t ORDER BY i, ctid")]
        assert decoded == [r[0] for r in await plain.fetch("SELECT at FROM t ORDER BY i, ctid")]
        assert decoded[:8] == [v for v in values[:4] for _ in range(2)]  # datetime.min: -infinity
        for special in ("infinity", "-infinity", "2025-03-01 12:00:00.123456+00"):
            sql = f"SELECT '{special}'::timestamptz"
            assert await fast.fetchval(sql) == await plain.fetchval(sql)
        for naive in (datetime.max, datetime.min, datetime(2025, 1, 1)):  # naive: as asyncpg
            sql = "SELECT $1::timestamptz::text"
            assert await fast.fetchval(sql, naive) == await plain.fetchval(sql, naive)
        for conn in (fast, plain):
            with pytest.raises(asyncpg.DataError, match="expected a datetime"):
                await conn.fetchval("SELECT $1::timestamptz", "2025-01-01")
    finally:
        await fast.close()
        await plain.close()
