"""Delivery semantics with a controllable in-memory backend: batching, failure classes, queue, spool."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpuid.delivery.delivery import Delivery
from gpuid.errors import ExportError, LaneError, RecordError
from gpuid.metrics import Metrics
from gpuid.records import GPUReading
from tests.support.app import eventually, sample
from tests.support.records import delivering, fast_delivery, reading


class Backend:
    """An exporter whose failures the test switches; records what it accepted and every attempt."""

    def __init__(self, name: str = "mem") -> None:
        self.name = name
        self.records: list[GPUReading] = []
        self.batches: list[int] = []
        self.attempts = 0
        self.down = False  # transient failures
        self.misconfigured = False  # lane errors
        self.refuse_all = False  # record errors for every record
        self.poison: set[str] = set()  # gpu_uuids refused (RecordError)
        self.name_refused = False  # say which records are refused (RecordError.indexes)
        self.down_at_open = False
        self.misconfigured_at_open = False
        self.hang = 0  # attempts that never answer
        self.crash = False
        self.closed = False

    async def open(self) -> None:
        if self.misconfigured_at_open:
            raise LaneError(f"{self.name}: bad credentials")
        if self.down_at_open:
            raise ExportError(f"{self.name} is down")

    async def export(self, batch: Sequence[GPUReading]) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.hang > 0:
            self.hang -= 1
            await asyncio.Event().wait()
        if self.crash:
            self.crash = False
            raise KeyError("a bug in the backend client")
        if self.down:
            raise ExportError(f"{self.name} is down")
        if self.misconfigured:
            raise LaneError(f"{self.name}: bad credentials")
        bad = [i for i, r in enumerate(batch) if self.refuse_all or r.gpu_uuid in self.poison]
        if bad:
            raise RecordError("value out of range", indexes=tuple(bad) if self.name_refused else ())
        self.records.extend(batch)
        self.batches.append(len(batch))

    async def health(self) -> bool:
        return not self.down

    async def close(self) -> None:
        self.closed = True


def uuids(records: Sequence[GPUReading]) -> list[str]:
    return [r.gpu_uuid for r in records]


def dropped(metrics: Metrics, name: str, reason: str) -> float:
    return float(sample(metrics, "gpuid_export_dropped_total", exporter=name, reason=reason))


async def test_batches_by_size_then_by_time() -> None:
    backend = Backend()
    delivery = Delivery([backend], Metrics(), fast_delivery(batch_size=10, flush_interval=0.05))
    async with delivering(delivery):
        delivery.submit([reading(n) for n in range(25)])
        await eventually(lambda: len(backend.records) == 25)
    assert backend.batches == [10, 10, 5]
    assert uuids(backend.records) == [reading(n).gpu_uuid for n in range(25)]
    assert backend.closed


def up(metrics: Metrics, name: str = "mem") -> float:
    return sample(metrics, "gpuid_exporter_up", exporter=name)


def dropped_total(metrics: Metrics) -> float:
    return sum(s.value for s in metrics.export_dropped.collect()[0].samples if s.name.endswith("_total"))


def logged(log_output: Any, event: str) -> list[dict[str, Any]]:
    return [e for line in log_output.getvalue().splitlines() if (e := json.loads(line))["event"] == event]


async def test_transient_failures_are_retried_until_delivered_once() -> None:
    backend, metrics = Backend(), Metrics()
    delivery = Delivery([backend], metrics, fast_delivery())
    async with delivering(delivery):
        await eventually(lambda: up(metrics) == 1)
        backend.down = True
        delivery.submit([reading(n) for n in range(3)])
        await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="mem") >= 3)
        assert up(metrics) == 0
        assert delivery.down() == ["mem"]
        backend.down = False
        await eventually(lambda: len(backend.records) == 3)
        assert up(metrics) == 1
    assert len(set(uuids(backend.records))) == 3
    assert sample(metrics, "gpuid_export_success_total", exporter="mem") == 3


async def test_unexpected_exception_is_retried_not_fatal() -> None:
    backend = Backend()
    backend.crash = True
    delivery = Delivery([backend], Metrics(), fast_delivery())
    async with delivering(delivery):
        delivery.submit([reading(1)])
        await eventually(lambda: len(backend.records) == 1)


async def test_lane_error_parks_the_lane_keeps_every_record_and_resumes(log_output: Any) -> None:
    backend, metrics = Backend(), Metrics()
    delivery = Delivery([backend], metrics, fast_delivery(batch_size=5))
    async with delivering(delivery):
        backend.misconfigured = True
        delivery.submit([reading(n) for n in range(12)])
        await eventually(lambda: backend.attempts >= 4, what="several parked retries")
        assert up(metrics) == 0
        assert delivery.waiting() == {"mem": 12}
        backend.misconfigured = False  # the operator fixed it: no restart needed
        await eventually(lambda: len(backend.records) == 12)
        assert up(metrics) == 1
    assert uuids(backend.records) == [reading(n).gpu_uuid for n in range(12)]
    assert dropped_total(metrics) == 0
    assert len(logged(log_output, "exporter parked")) == 1
    assert len(logged(log_output, "exporter resumed")) == 1


async def test_lane_error_at_open_parks_until_fixed() -> None:
    backend, metrics = Backend(), Metrics()
    backend.misconfigured_at_open = True
    delivery = Delivery([backend], metrics, fast_delivery())
    async with delivering(delivery):
        delivery.submit([reading(n) for n in range(5)])
        await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="mem") >= 2)
        assert up(metrics) == 0
        assert delivery.waiting() == {"mem": 5}
        backend.misconfigured_at_open = False
        await eventually(lambda: len(backend.records) == 5)
        assert up(metrics) == 1


async def test_an_export_error_not_marked_transient_parks_never_drops() -> None:
    class Legacy(Backend):
        async def export(self, batch: Sequence[GPUReading]) -> None:
            if self.misconfigured:
                raise ExportError("old-style permanent error", transient=False)
            await super().export(batch)

    backend, metrics = Legacy(), Metrics()
    backend.misconfigured = True
    delivery = Delivery([backend], metrics, fast_delivery())
    async with delivering(delivery):
        delivery.submit([reading(n) for n in range(4)])
        await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="mem") >= 2)
        backend.misconfigured = False
        await eventually(lambda: len(backend.records) == 4)


async def test_refused_records_named_by_index_are_dropped_alone(log_output: Any) -> None:
    backend, metrics = Backend(), Metrics()
    backend.poison, backend.name_refused = {reading(3).gpu_uuid, reading(7).gpu_uuid}, True
    delivery = Delivery([backend], metrics, fast_delivery(batch_size=10))
    async with delivering(delivery):
        delivery.submit([reading(n, node=f"node-{n}") for n in range(10)])
        await eventually(lambda: delivery.waiting() == {"mem": 0})
    assert uuids(backend.records) == [reading(n).gpu_uuid for n in range(10) if n not in (3, 7)]
    assert dropped(metrics, "mem", "rejected") == 2
    assert backend.attempts == 2  # the batch, then the rest of it
    lines = logged(log_output, "record refused by the backend, dropped")
    assert [(e["node"], e["gpu_uuid"]) for e in lines] == [
        ("node-3", reading(3).gpu_uuid),
        ("node-7", reading(7).gpu_uuid),
    ]
    assert all(e["pod"] and "value out of range" in e["error"] for e in lines)


async def test_one_poisoned_record_costs_only_itself_found_by_bisection() -> None:
    backend, metrics = Backend(), Metrics()
    backend.poison = {reading(29).gpu_uuid}
    delivery = Delivery([backend], metrics, fast_delivery(batch_size=50))
    async with delivering(delivery):
        delivery.submit([reading(n, node=f"node-{n % 30}") for n in range(50)])  # 30 nodes' records
        await eventually(lambda: delivery.waiting() == {"mem": 0})
    assert sorted(uuids(backend.records)) == sorted(reading(n).gpu_uuid for n in range(50) if n != 29)
    assert dropped(metrics, "mem", "rejected") == 1
    assert up(metrics) == 1
    assert backend.attempts <= 1 + 2 * math.ceil(math.log2(50))  # 13: the batch, then two halves per level


async def test_a_batch_refused_whole_drops_each_record_counted() -> None:
    backend, metrics = Backend(), Metrics()
    backend.refuse_all = True
    delivery = Delivery([backend], metrics, fast_delivery(batch_size=8))
    async with delivering(delivery):
        delivery.submit([reading(n) for n in range(8)])
        await eventually(lambda: dropped(metrics, "mem", "rejected") == 8)
        backend.refuse_all = False
        delivery.submit([reading(9)])  # the lane goes on
        await eventually(lambda: len(backend.records) == 1)


async def test_a_stalled_attempt_is_cancelled_reported_and_retried(log_output: Any) -> None:
    backend, metrics = Backend(), Metrics()
    backend.timeout = 0.1  # its own deadline: delivery's is a second more
    backend.hang = 1
    delivery = Delivery([backend], metrics, fast_delivery())
    async with delivering(delivery):
        await eventually(lambda: up(metrics) == 1)
        delivery.submit([reading(1)])
        await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="mem") == 1)
        assert up(metrics) == 0
        await eventually(lambda: len(backend.records) == 1)
        assert up(metrics) == 1
    [stall] = logged(log_output, "export attempt stalled")
    assert stall["exporter"] == "mem"
    assert stall["deadline"] == 1.1


async def test_down_at_startup_is_down_and_records_wait() -> None:
    backend, metrics = Backend(), Metrics()
    backend.down_at_open = True
    delivery = Delivery([backend], metrics, fast_delivery())
    assert up(metrics) == 0
    async with delivering(delivery):
        delivery.submit([reading(n) for n in range(5)])
        await asyncio.sleep(0.2)
        assert up(metrics) == 0
        assert delivery.waiting() == {"mem": 5}
        backend.down_at_open = False
        await eventually(lambda: len(backend.records) == 5)
        assert up(metrics) == 1


async def test_full_queue_drops_newest_and_counts_them() -> None:
    backend, metrics = Backend(), Metrics()
    delivery = Delivery([backend], metrics, fast_delivery(batch_size=5, queue_size=10))
    for n in range(4):
        delivery.submit([reading(n * 4 + i) for i in range(4)])  # never blocks, not even unrun
    assert delivery.waiting() == {"mem": 10}
    assert dropped(metrics, "mem", "queue_full") == 6
    assert sample(metrics, "gpuid_export_queue_depth", exporter="mem") == 10
    await delivery.drain(1.0)
    assert uuids(backend.records) == [reading(n).gpu_uuid for n in range(10)]


async def test_one_backend_down_does_not_hold_back_another() -> None:
    up, down = Backend("up"), Backend("down")
    down.down = True
    delivery = Delivery([up, down], Metrics(), fast_delivery(batch_size=3))
    async with delivering(delivery, grace=0.2):
        for n in range(10):
            delivery.submit([reading(n)])
        await eventually(lambda: len(up.records) == 10)
        assert delivery.waiting() == {"up": 0, "down": 10}
        assert delivery.down() == ["down"]


async def test_spool_takes_overflow_and_keeps_order(tmp_path: Path) -> None:
    backend, metrics = Backend(), Metrics()
    backend.down = True
    delivery = Delivery([backend], metrics, fast_delivery(batch_size=4, queue_size=8, spool_dir=tmp_path))
    async with delivering(delivery):
        for n in range(50):
            delivery.submit([reading(n)])
        assert delivery.waiting() == {"mem": 50}
        assert sample(metrics, "gpuid_spool_bytes", exporter="mem") > 0
        backend.down = False
        await eventually(lambda: len(backend.records) == 50)
    assert uuids(backend.records) == [reading(n).gpu_uuid for n in range(50)]
    assert dropped(metrics, "mem", "queue_full") == 0
    assert sample(metrics, "gpuid_spool_bytes", exporter="mem") == 0
    assert not list((tmp_path / "mem").glob("*.jsonl"))


async def test_spool_full_drops_and_counts(tmp_path: Path) -> None:
    metrics = Metrics()
    delivery = Delivery([Backend()], metrics, fast_delivery(spool_dir=tmp_path, spool_max_bytes=64 * 1024))
    for n in range(200):
        delivery.submit([reading(n)])
    kept = delivery.waiting()["mem"]
    assert 0 < kept < 200
    assert dropped(metrics, "mem", "spool_full") == 200 - kept
    await delivery.drain(2.0)


async def test_a_dead_backend_filling_its_spool_costs_the_others_nothing(tmp_path: Path) -> None:
    up, down, metrics = Backend("up"), Backend("down"), Metrics()
    down.down = True
    settings = fast_delivery(batch_size=4, queue_size=8, spool_dir=tmp_path, spool_max_bytes=64 * 1024)
    delivery = Delivery([up, down], metrics, settings)
    async with delivering(delivery, grace=0.2):
        for n in range(0, 300, 4):
            delivery.submit([reading(i) for i in range(n, n + 4)])
            await eventually(lambda n=n: len(up.records) == n + 4)  # the healthy backend keeps up
    assert dropped(metrics, "down", "spool_full") > 0  # the dead backend's own spool filled up...
    assert dropped(metrics, "up", "spool_full") == 0  # ...and the healthy one lost nothing to it


async def test_drain_flushes_within_grace_and_spools_the_rest(tmp_path: Path) -> None:
    backend = Backend()
    settings = fast_delivery(batch_size=5, spool_dir=tmp_path)
    delivery = Delivery([backend], Metrics(), settings)
    async with delivering(delivery, grace=0.3):
        delivery.submit([reading(n) for n in range(5)])
        await eventually(lambda: len(backend.records) == 5)
        backend.down = True
        delivery.submit([reading(n) for n in range(5, 12)])
    assert backend.closed
    assert delivery.waiting() == {"mem": 7}

    # The next process starts with what the last one could not deliver.
    again, metrics = Backend(), Metrics()
    restarted = Delivery([again], metrics, settings)
    assert restarted.waiting() == {"mem": 7}
    async with delivering(restarted):
        await eventually(lambda: len(again.records) == 7)
    assert uuids(again.records) == [reading(n).gpu_uuid for n in range(5, 12)]


async def test_drain_without_spool_counts_what_is_lost(log_output: Any) -> None:
    backend, metrics = Backend(), Metrics()
    backend.down = True
    delivery = Delivery([backend], metrics, fast_delivery())
    async with delivering(delivery, grace=0.2):
        delivery.submit([reading(n) for n in range(6)])
    assert dropped(metrics, "mem", "shutdown") == 6
    assert "shutdown grace ran out" in log_output.getvalue()


async def test_unreadable_spool_segment_is_set_aside(tmp_path: Path) -> None:
    settings = fast_delivery(spool_dir=tmp_path, queue_size=1, batch_size=1)  # one record per segment
    first = Delivery([Backend()], Metrics(), settings)
    first.submit([reading(1)])
    first.submit([reading(2)])
    first._spool.close()  # type: ignore[union-attr]  # a process that died without draining
    segments = sorted((tmp_path / "mem").glob("*.jsonl"))
    assert len(segments) == 2
    segments[0].write_text("not json\n{}\n")
    backend, metrics = Backend(), Metrics()
    second = Delivery([backend], metrics, settings)
    async with delivering(second):
        await eventually(lambda: len(backend.records) == 1)
    assert uuids(backend.records) == [reading(2).gpu_uuid]
    assert dropped(metrics, "mem", "spool_corrupt") == 1
    assert list((tmp_path / "mem").glob("*.corrupt"))
