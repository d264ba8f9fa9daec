"""``gpu_changed`` records ride with readings: spool, stdout, S3 (HTTP: test_http); PostgreSQL skips them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from gpuid.delivery.delivery import Delivery
from gpuid.delivery.segment import reading_from_dict
from gpuid.exporters.stdout import StdoutExporter
from gpuid.metrics import Metrics
from gpuid.records import CHANGE_FIELD_NAMES, FIELD_NAMES, record_dict
from tests.exporters.test_postgres import exporter_for as pg_exporter
from tests.exporters.test_postgres import query
from tests.exporters.test_s3 import export_once, make_bucket, objects, records_in
from tests.support.app import eventually
from tests.support.memory import MemoryExporter
from tests.support.records import change, delivering, fast_delivery, reading


def test_a_change_round_trips_through_the_spool_format() -> None:
    for kind in ("added", "removed", "replaced", "moved"):
        c = change(3, kind=kind)
        assert reading_from_dict(record_dict(c)) == c
    assert reading_from_dict(record_dict(reading(1))) == reading(1)  # readings are as they were


async def test_changes_survive_a_restart_in_the_spool_in_order(tmp_path: Path) -> None:
    batch = [reading(1), change(2), reading(3)]
    down = MemoryExporter()
    down.fail_next = 1_000_000  # the backend is down until the process stops
    first = Delivery([down], Metrics(), fast_delivery(spool_dir=tmp_path))
    first.submit(batch)
    await first.drain(0.2)
    memory = MemoryExporter()
    async with delivering(Delivery([memory], Metrics(), fast_delivery(spool_dir=tmp_path))):
        await eventually(lambda: len(memory.records) + len(memory.changes) == 3)
    assert memory.records == [reading(1), reading(3)]
    assert memory.changes == [change(2)]
    assert list((tmp_path / "memory").glob("*.jsonl")) == []  # delivered: the spool is empty


async def test_stdout_prints_a_change_as_one_json_line_with_its_event() -> None:
    out = io.StringIO()
    await StdoutExporter(out).export([reading(1), change(2)])
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "gpu_reading"
    assert second == {"event": "gpu_changed", **change(2).to_dict()}
    assert list(second)[1:] == list(CHANGE_FIELD_NAMES)


async def test_s3_jsonl_keeps_changes_and_csv_leaves_them_out(s3_env: dict[str, str]) -> None:
    await make_bucket(s3_env)
    await export_once(s3_env, [reading(1), change(2)], S3_PREFIX="jsonl")
    await export_once(s3_env, [reading(1), change(2)], S3_PREFIX="csv", S3_FORMAT="csv")
    await export_once(s3_env, [change(3)], S3_PREFIX="only", S3_FORMAT="csv")  # nothing to write
    objs = await objects(s3_env)
    assert sorted(k.split("/", 1)[0] for k in objs) == ["csv", "jsonl"]
    jsonl = {k: v for k, v in objs.items() if k.startswith("jsonl/")}
    assert records_in(jsonl) == [reading(1).to_dict(), {"event": "gpu_changed", **change(2).to_dict()}]
    [csv_object] = [v for k, v in objs.items() if k.startswith("csv/")]
    rows = list(csv.reader(io.StringIO(csv_object["body"].decode())))
    assert tuple(rows[0]) == FIELD_NAMES
    assert [row[FIELD_NAMES.index("gpu_uuid")] for row in rows[1:]] == [reading(1).gpu_uuid]


async def test_postgres_stores_the_readings_of_a_mixed_batch_and_skips_changes(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    exporter = pg_exporter(pg_env)
    await exporter.open()
    try:
        await exporter.export([reading(1), change(2, kind="moved"), reading(3)])
        await exporter.export([change(4)])
    finally:
        await exporter.close()
    rows = await query(pg_server, pg_env, "SELECT gpu_uuid FROM gpu_readings ORDER BY gpu_uuid")
    assert [r["gpu_uuid"] for r in rows] == [reading(1).gpu_uuid, reading(3).gpu_uuid]
    assert await query(pg_server, pg_env, "SELECT * FROM gpu_moves") == []
