"""How fast do records reach PostgreSQL and S3, next to the bare ceiling?

Run from the repo root: ``python -m bench.ingest [--records N] [--batch N] [--passes N]``.
Starts its own throwaway PostgreSQL (as tests/exporters does) and moto's S3
server. For PostgreSQL it prints, in one run and on the same rows:

- bare asyncpg ``COPY`` into an unindexed table (the ceiling; rows built beforehand),
- the exporter's *steady state*: every GPU already known, seen again where it was,
- a *first sweep*: every GPU never seen before,
- a *move-heavy* pass: every GPU seen on another machine than before,

with each ratio to bare COPY and its bound. Every exporter batch is timed
right after bare COPYs of the same rows, so load from other processes weighs
on both alike. Then the exporter through ``Delivery`` with the on-disk spool,
and records/s into S3 (moto). Figures vary by machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from gpuid.config import load_settings
from gpuid.delivery.delivery import Delivery
from gpuid.delivery.settings import DeliverySettings
from gpuid.exporters.postgres.check import COLUMNS, prepare
from gpuid.exporters.postgres.exporter import PostgresExporter, connect
from gpuid.exporters.postgres.settings import PostgresSettings
from gpuid.exporters.s3 import S3Exporter
from gpuid.log import configure_logging
from gpuid.metrics import Metrics
from gpuid.records import GPUReading
from tests.support.records import reading
from tests.support.services import postgres_server, s3_server

STEADY_BOUND = 0.5  # of bare COPY
FIRST_SWEEP_BOUND = 20_000  # rows/s
RECOMMENDED_BATCH = 2_000


def readings(count: int, *, sweep: int = 0, shift: int = 0) -> list[GPUReading]:
    """``count`` distinct GPUs, eight per node, as a fleet scan produces them.

    ``sweep`` dates the scan (one minute apart); ``shift`` puts every GPU that many
    nodes further along, so a pass with another ``shift`` moves every GPU.
    """
    nodes = max(1, count // 8)
    at = f"2025-01-01T{sweep // 60:02d}:{sweep % 60:02d}:00.000Z"
    return [
        reading(
            n,
            cluster="bench",
            node=f"node-{(node := (n // 8 + shift) % nodes)}",
            machine=f"i-{node:08x}",
            pod_uid=f"pod-{node}-{sweep}",
            observed_at=at,
        )
        for n in range(count)
    ]


async def timed(what: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await what()
    return time.perf_counter() - start


def _env(port: int, schema: str) -> dict[str, str]:
    return {
        "CLUSTER_NAME": "bench",
        "EXPORTER_TYPE": "postgres",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "POSTGRES_AUTO_MIGRATE": "true",
        "POSTGRES_SCHEMA": schema,
    }


class Clock:
    """Seconds spent per case; cases are timed batch by batch, interleaved, so load hits all alike."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.rows: dict[str, int] = {}

    async def time(self, case: str, what: Awaitable[object], rows: int) -> None:
        self.seconds[case] = self.seconds.get(case, 0.0) + await timed(lambda: what)
        self.rows[case] = self.rows.get(case, 0) + rows

    def rates(self) -> dict[str, float]:
        return {case: self.rows[case] / seconds for case, seconds in self.seconds.items()}


async def bench_postgres(port: int, n: int, batch: int, passes: int) -> dict[str, float]:
    """Rows/s of each case; every exporter batch is timed next to bare COPYs of the same rows."""
    conn = await connect(PostgresSettings(host="127.0.0.1", port=port, user="postgres", database="postgres"))
    exporter = PostgresExporter.from_settings(load_settings(_env(port, "bench")).exporters)
    await exporter.open()
    await conn.execute("CREATE TABLE bare_copy (LIKE bench.gpu_readings INCLUDING DEFAULTS)")
    await conn.execute("CREATE TABLE history_copy (LIKE bench.gpu_readings INCLUDING ALL)")
    clock = Clock()

    async def interleaved(sweep: int, shift: int, cases: dict[str, PostgresExporter]) -> None:
        rows = readings(n, sweep=sweep, shift=shift)
        records = prepare(rows)  # the bare COPYs get their rows ready-made
        for i in range(0, n, batch):
            part = records[i : i + batch]
            await clock.time(
                "bare", conn.copy_records_to_table("bare_copy", records=part, columns=COLUMNS), len(part)
            )
            await clock.time(
                "history",
                conn.copy_records_to_table("history_copy", records=part, columns=COLUMNS),
                len(part),
            )
            for case, e in cases.items():
                await clock.time(case, e.export(rows[i : i + batch]), len(part))

    await interleaved(0, 0, {"first sweep": exporter})
    for sweep in range(1, passes + 1):
        await interleaved(sweep, 0, {"steady": exporter})
    await exporter.close()
    restarted = PostgresExporter.from_settings(load_settings(_env(port, "bench")).exporters)
    await restarted.open()
    await interleaved(passes + 1, 0, {"steady, cold cache": restarted})
    await interleaved(passes + 2, 1, {"moves": restarted})
    moved = await conn.fetchval("SELECT count(*) FROM bench.gpu_moves")
    stored = await conn.fetchval("SELECT count(*) FROM bench.gpu_readings")
    await restarted.close()
    await conn.close()
    if (moved, stored) != (n, (passes + 3) * n):
        raise SystemExit(f"bench: wrong result: {moved} moves (want {n}), {stored} readings")
    return clock.rates()


async def bench_delivery(port: int, n: int, batch: int, tmp: Path) -> float:
    exporter = PostgresExporter.from_settings(load_settings(_env(port, "via_delivery")).exporters)
    config = DeliverySettings(
        batch_size=batch, flush_interval=0.05, queue_size=max(batch, 10_000), spool_dir=tmp
    )
    delivery = Delivery([exporter], Metrics(), config)
    task = asyncio.create_task(delivery.run())
    rows = readings(n)

    async def deliver_all() -> None:
        for i in range(0, len(rows), 8):  # one submit per node, as the scanner does
            delivery.submit(rows[i : i + 8])
        while delivery.waiting()["postgres"]:  # noqa: ASYNC110 - polling is the measurement
            await asyncio.sleep(0.005)

    seconds = await timed(deliver_all)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await delivery.drain(5)
    return n / seconds


async def bench_s3(rows: list[GPUReading], batch: int) -> float:
    with s3_server() as server:
        env = {
            "CLUSTER_NAME": "bench",
            "EXPORTER_TYPE": "s3",
            "S3_BUCKET": "bench",
            "S3_ENDPOINT_URL": server.endpoint,
        }
        exporter = S3Exporter.from_settings(
            load_settings(env | {"S3_FORCE_PATH_STYLE": "true", "S3_REGION": "us-east-1"}).exporters
        )
        import aioboto3

        async with aioboto3.Session().client(
            "s3", endpoint_url=env["S3_ENDPOINT_URL"], region_name="us-east-1"
        ) as s3:
            await s3.create_bucket(Bucket="bench")
        await exporter.open()

        async def put_all() -> None:
            for i in range(0, len(rows), batch):
                await exporter.export(rows[i : i + batch])

        seconds = await timed(put_all)
        await exporter.close()
        return len(rows) / seconds


def report(pg: dict[str, float], n: int, batch: int, passes: int, delivery: float) -> None:
    bare = pg["bare"]
    print(
        f"{n} GPUs, batches of {batch}, {passes} steady passes; each exporter batch timed next to bare COPYs"
    )
    print(
        f"  {'bare asyncpg COPY':<36}{bare:>10,.0f} rows/s    (the ceiling: unindexed table, rows ready-made)"
    )
    history = pg["history"]
    print(f"  {'COPY into the history table shape':<36}{history:>10,.0f} rows/s    ({history / bare:.0%})")
    steady_ok = "ok" if pg["steady"] >= STEADY_BOUND * bare else "MISSED"
    sweep_ok = "ok" if pg["first sweep"] >= FIRST_SWEEP_BOUND else "MISSED"
    for name, note in (
        ("steady", f"bound >= {STEADY_BOUND:.0%} of bare COPY: {steady_ok}"),
        ("first sweep", f"bound >= {FIRST_SWEEP_BOUND:,} rows/s: {sweep_ok}"),
        ("steady, cold cache", "after a restart: every row read once"),
        ("moves", "every GPU on another machine"),
    ):
        rate = pg[name]
        print(f"  {'exporter, ' + name:<36}{rate:>10,.0f} rows/s    ({rate / bare:.0%}; {note})")
    name = "exporter via Delivery+spool"
    print(f"  {name:<36}{delivery:>10,.0f} rows/s    ({delivery / bare:.0%}; a first sweep)")


def main(argv: list[str] | None = None) -> None:
    asyncio.run(_main(argv))


async def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest")
    parser.add_argument("--records", type=int, default=40_000, help="GPUs in the fleet")
    parser.add_argument(
        "--batch", type=int, default=RECOMMENDED_BATCH, help="records per batch (EXPORT_BATCH_SIZE)"
    )
    parser.add_argument("--passes", type=int, default=3, help="steady passes over the fleet")
    args = parser.parse_args(argv)
    configure_logging("warning", "console")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    with postgres_server() as server, tempfile.TemporaryDirectory() as tmp:
        port = server.port
        pg = await bench_postgres(port, args.records, args.batch, args.passes)
        delivery = await bench_delivery(port, args.records, args.batch, Path(tmp))
    s3 = await bench_s3(readings(args.records), args.batch)
    report(pg, args.records, args.batch, args.passes, delivery)
    print(f"  {'s3 exporter into moto':<34}{s3:>10,.0f} records/s ({-(-args.records // args.batch)} objects)")


if __name__ == "__main__":
    main()
