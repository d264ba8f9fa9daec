"""S3 exporter against moto's S3 server over HTTP: formats, keys, outages, errors."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import aioboto3
import pytest

from gpuid.config import load_settings
from gpuid.delivery.delivery import Delivery
from gpuid.errors import LaneError
from gpuid.exporters.s3 import S3Exporter
from gpuid.metrics import Metrics
from gpuid.records import FIELD_NAMES
from tests.support.app import eventually, sample
from tests.support.records import delivering, fast_delivery, reading


def exporter_for(env: dict[str, str], **changes: str) -> S3Exporter:
    return S3Exporter.from_settings(load_settings(env | changes).exporters)


def client(env: dict[str, str]) -> Any:
    return aioboto3.Session().client("s3", endpoint_url=env["S3_ENDPOINT_URL"], region_name="us-east-1")


async def make_bucket(env: dict[str, str]) -> None:
    async with client(env) as s3:
        await s3.create_bucket(Bucket=env["S3_BUCKET"])


async def objects(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every object in the bucket: key -> {body (raw bytes), head fields}."""
    out: dict[str, dict[str, Any]] = {}
    async with client(env) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=env["S3_BUCKET"]):
            for item in page.get("Contents", []):
                got = await s3.get_object(Bucket=env["S3_BUCKET"], Key=item["Key"])
                body = await got["Body"].read()
                out[item["Key"]] = {"body": body, **{k: v for k, v in got.items() if k != "Body"}}
    return out


def records_in(objs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key, obj in objs.items():
        body = gzip.decompress(obj["body"]) if key.endswith(".gz") else obj["body"]
        rows.extend(json.loads(line) for line in body.decode().splitlines())
    return rows


async def export_once(env: dict[str, str], batch: list[Any], **changes: str) -> None:
    exporter = exporter_for(env, **changes)
    await exporter.open()
    try:
        await exporter.export(batch)
    finally:
        await exporter.close()


async def test_jsonl_object_has_every_field_and_metadata(s3_env: dict[str, str]) -> None:
    await make_bucket(s3_env)
    batch = [reading(n, observed_at="2025-06-07T08:09:10.123Z") for n in range(3)]
    await export_once(s3_env, batch, S3_PREFIX="inv/gpus/")
    objs = await objects(s3_env)
    ((key, obj),) = objs.items()
    assert key.startswith("inv/gpus/cluster=test/year=2025/month=06/day=07/hour=08/20250607T080910123Z-")
    assert key.endswith(".jsonl")
    assert obj["ContentType"] == "application/x-ndjson"
    assert obj["Metadata"]["record-count"] == "3"
    assert obj["Metadata"]["schema-version"] == "1"
    assert records_in(objs) == [r.to_dict() for r in batch]


async def test_csv_has_documented_header_and_values(s3_env: dict[str, str]) -> None:
    await make_bucket(s3_env)
    batch = [reading(1), reading(2, machine=None)]
    await export_once(s3_env, batch, S3_FORMAT="csv")
    ((key, obj),) = (await objects(s3_env)).items()
    assert key.endswith(".csv")
    assert obj["ContentType"] == "text/csv"
    rows = list(csv.reader(io.StringIO(obj["body"].decode())))
    assert tuple(rows[0]) == FIELD_NAMES
    first = dict(zip(FIELD_NAMES, rows[1], strict=True))
    assert first["gpu_uuid"] == batch[0].gpu_uuid
    assert first["gpu_index"] == "1"
    assert json.loads(first["mig_devices"]) == batch[0].to_dict()["mig_devices"]
    assert dict(zip(FIELD_NAMES, rows[2], strict=True))["machine"] == ""


async def test_gzip_sets_encoding_and_extension(s3_env: dict[str, str]) -> None:
    await make_bucket(s3_env)
    batch = [reading(n) for n in range(5)]
    await export_once(s3_env, batch, S3_COMPRESS="gzip", S3_SSE="AES256")
    objs = await objects(s3_env)
    ((key, obj),) = objs.items()
    assert key.endswith(".jsonl.gz")
    assert obj["ContentEncoding"] == "gzip"
    assert obj["ServerSideEncryption"] == "AES256"
    assert records_in(objs) == [r.to_dict() for r in batch]


async def test_keys_unique_under_concurrency_and_retries_idempotent(s3_env: dict[str, str]) -> None:
    await make_bucket(s3_env)
    exporters = [exporter_for(s3_env) for _ in range(4)]  # four "replicas"
    await asyncio.gather(*(e.open() for e in exporters))
    try:
        same_ms = "2025-01-01T00:00:00.000Z"
        batches = [[reading(n, observed_at=same_ms)] for n in range(40)]
        await asyncio.gather(*(exporters[i % 4].export(b) for i, b in enumerate(batches)))
        await exporters[0].export(batches[0])  # a retried batch overwrites its own object
    finally:
        await asyncio.gather(*(e.close() for e in exporters))
    objs = await objects(s3_env)
    assert len(objs) == 40
    assert sorted(r["gpu_uuid"] for r in records_in(objs)) == sorted(b[0].gpu_uuid for b in batches)


async def test_missing_bucket_is_a_lane_error(s3_env: dict[str, str]) -> None:
    exporter = exporter_for(s3_env)
    with pytest.raises(LaneError) as err:
        await exporter.open()
    assert s3_env["S3_BUCKET"] in str(err.value)
    assert "S3_BUCKET" in str(err.value)


async def test_a_missing_bucket_parks_the_lane_until_it_is_created(
    s3_env: dict[str, str], tmp_path: Path, log_output: Any
) -> None:
    metrics = Metrics()
    settings = fast_delivery(batch_size=5, queue_size=10, spool_dir=tmp_path)
    produced = [reading(n) for n in range(30)]
    delivery = Delivery([exporter_for(s3_env)], metrics, settings)
    async with delivering(delivery):
        for n in range(0, 30, 3):
            delivery.submit(produced[n : n + 3])
        await eventually(
            lambda: sample(metrics, "gpuid_export_failure_total", exporter="s3") >= 3, what="parked retries"
        )
        assert sample(metrics, "gpuid_exporter_up", exporter="s3") == 0
        assert delivery.waiting() == {"s3": 30}
        await make_bucket(s3_env)  # the operator creates it: no restart
        await eventually(lambda: delivery.waiting() == {"s3": 0})
        assert sample(metrics, "gpuid_exporter_up", exporter="s3") == 1
    uuids = [r["gpu_uuid"] for r in records_in(await objects(s3_env))]
    assert sorted(set(uuids)) == sorted(r.gpu_uuid for r in produced)
    assert sum(s.value for s in metrics.export_dropped.collect()[0].samples if s.name.endswith("total")) == 0
    assert sum('"exporter parked"' in line for line in log_output.getvalue().splitlines()) == 1
    assert sum('"exporter resumed"' in line for line in log_output.getvalue().splitlines()) == 1


async def test_s3_down_at_startup_and_mid_run_delivers_everything_once(
    s3_server: Any,
    s3_env: dict[str, str],
) -> None:
    await make_bucket(s3_env)
    metrics = Metrics()
    s3_server.stop()
    try:
        delivery = Delivery([exporter_for(s3_env)], metrics, fast_delivery(batch_size=5))
        async with delivering(delivery):
            delivery.submit([reading(n) for n in range(12)])
            await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="s3") >= 1)
            assert not delivery.healthy()
            s3_server.start()
            await eventually(lambda: delivery.waiting() == {"s3": 0})
            assert delivery.healthy()
            s3_server.stop()
            failures = sample(metrics, "gpuid_export_failure_total", exporter="s3")
            delivery.submit([reading(n) for n in range(12, 20)])
            await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="s3") > failures)
            s3_server.start()
            await eventually(lambda: delivery.waiting() == {"s3": 0})
    finally:
        s3_server.ensure_started()
    uuids = [r["gpu_uuid"] for r in records_in(await objects(s3_env))]
    assert len(uuids) == 20
    assert len(set(uuids)) == 20
