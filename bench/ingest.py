"""How fast do records reach PostgreSQL and S3, next to the bare ceiling?

Run from the repo root: ``python -m bench.ingest [--records N] [--batch N]``.
Starts its own throwaway PostgreSQL (as tests/exporters does) and moto's S3
server, then prints rows/s for: the postgres exporter (history with an
idempotent insert, inventory upsert and move detection, one transaction per
batch), the same through ``Delivery`` with the on-disk spool, a bare asyncpg
``COPY`` of the same rows into an unindexed table (the ceiling), and
records/s into S3 (moto). Figures vary by machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gpuid.config import load_settings
from gpuid.delivery.delivery import Delivery
from gpuid.delivery.settings import DeliverySettings
from gpuid.exporters.postgres.exporter import COLUMNS, PostgresExporter, connect
from gpuid.exporters.postgres.fold import observed_at
from gpuid.exporters.postgres.settings import PostgresSettings
from gpuid.exporters.s3 import S3Exporter
from gpuid.log import configure_logging
from gpuid.metrics import Metrics
from gpuid.records import GPUReading


def readings(count: int) -> list[GPUReading]:
    """``count`` distinct GPUs, eight per node, as a fleet scan produces them."""
    return [
        GPUReading(
            cluster="bench",
            node=f"node-{n // 8}",
            machine=f"i-{n // 8:08x}",
            source=f"gpu-operator/nvidia-device-plugin-{n // 8}",
            pod_uid=f"pod-{n // 8}",
            gpu_uuid=f"GPU-{n:08d}-0000-0000-0000-000000000000",
            gpu_serial=f"1652{n:09d}",
            chassis_serial="1821223000123",
            module_id=n % 8 + 1,
            gpu_index=n % 8,
            pci_bus_id=f"00000000:{n % 8:02X}:00.0",
            product_name="NVIDIA H100 80GB HBM3",
            product_architecture="Hopper",
            board_part_number="692-2G520-0200-000",
            vbios_version="96.00.74.00.01",
            driver_version="550.54.15",
            cuda_version="12.4",
            mig_mode="Disabled",
            mig_devices=(),
            observed_at="2025-01-01T00:00:00.000Z",
        )
        for n in range(count)
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres() -> Iterator[int]:
    """A throwaway server (as the postgres user when root, like the tests); yields its port."""
    bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="gpuid-bench-pg-"))
    os.chmod(root, 0o755)
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(root, "postgres", "postgres")
    port, data = _free_port(), root / "data"
    try:
        subprocess.run(
            [*as_pg, bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"],
            check=True,
            capture_output=True,
        )
        opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
        subprocess.run(
            [*as_pg, bindir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "log", "-w", "start"],
            check=True,
            capture_output=True,
        )
        yield port
    finally:
        subprocess.run(
            [*as_pg, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


async def timed(what: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await what()
    return time.perf_counter() - start


async def bench_postgres(port: int, rows: list[GPUReading], batch: int, tmp: Path) -> dict[str, float]:
    env = {
        "CLUSTER_NAME": "bench",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": "postgres",
    }
    env |= {"POSTGRES_DB": "postgres", "POSTGRES_AUTO_MIGRATE": "true"}
    batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]

    exporter = PostgresExporter.from_settings(
        load_settings(env | {"POSTGRES_SCHEMA": "via_exporter"}).exporters
    )
    await exporter.open()

    async def export_all() -> None:
        for b in batches:
            await exporter.export(b)

    exporter_s = await timed(export_all)
    await exporter.close()

    delivery_exporter = PostgresExporter.from_settings(
        load_settings(env | {"POSTGRES_SCHEMA": "via_delivery"})
    )
    config = DeliverySettings(
        batch_size=batch, flush_interval=0.05, queue_size=max(batch, 10_000), spool_dir=tmp
    )
    delivery = Delivery([delivery_exporter], Metrics(), config)
    task = asyncio.create_task(delivery.run())

    async def deliver_all() -> None:
        for i in range(0, len(rows), 8):  # one submit per node, as the scanner does
            delivery.submit(rows[i : i + 8])
        while delivery.waiting()["postgres"]:  # noqa: ASYNC110 - polling is the measurement
            await asyncio.sleep(0.005)

    delivery_s = await timed(deliver_all)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await delivery.drain(5)

    conn = await connect(PostgresSettings(host="127.0.0.1", port=port, user="postgres", database="postgres"))
    await conn.execute("CREATE TABLE bare_copy (LIKE via_exporter.gpu_readings INCLUDING DEFAULTS)")
    records = [(*(getattr(r, c) for c in COLUMNS[:-2]), json.dumps([]), observed_at(r)) for r in rows]

    async def copy_all() -> None:
        for i in range(0, len(records), batch):
            await conn.copy_records_to_table("bare_copy", records=records[i : i + batch], columns=COLUMNS)

    copy_s = await timed(copy_all)
    await conn.close()
    n = len(rows)
    return {"exporter": n / exporter_s, "delivery": n / delivery_s, "copy": n / copy_s}


async def bench_s3(rows: list[GPUReading], batch: int) -> float:
    from moto.server import ThreadedMotoServer

    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {"CLUSTER_NAME": "bench", "S3_BUCKET": "bench", "S3_ENDPOINT_URL": f"http://{host}:{port}"}
        exporter = S3Exporter.from_settings(
            load_settings(env | {"S3_FORCE_PATH_STYLE": "true", "S3_REGION": "us-east-1"})
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
    finally:
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="records per batch (EXPORT_BATCH_SIZE)")
    args = parser.parse_args()
    configure_logging("warning", "console")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    rows = readings(args.records)
    with postgres() as port, tempfile.TemporaryDirectory() as tmp:
        pg = await bench_postgres(port, rows, args.batch, Path(tmp))
    s3 = await bench_s3(rows, args.batch)
    print(f"{args.records} records, batches of {args.batch}")
    for name, key in (("postgres exporter", "exporter"), ("postgres via Delivery+spool", "delivery")):
        print(f"  {name:<28}{pg[key]:>10,.0f} rows/s    ({pg[key] / pg['copy']:.0%} of bare COPY)")
    print(f"  {'bare asyncpg COPY':<28}{pg['copy']:>10,.0f} rows/s    (the ceiling)")
    print(f"  {'s3 exporter into moto':<28}{s3:>10,.0f} records/s ({-(-args.records // args.batch)} objects)")


if __name__ == "__main__":
    asyncio.run(main())
