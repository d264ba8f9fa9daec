"""Delivery semantics with a controllable in-memory backend: batching, retries, queue policy, spool."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpuid.delivery.delivery import Delivery
from gpuid.errors import ExportError
from gpuid.metrics import Metrics
from gpuid.records import GPUReading
from tests.support.app import eventually
from tests.support.records import delivering, fast_delivery, reading


class Backend:
    """An exporter whose availability the test switches; records what it accepted."""

    def __init__(self, name: str = "mem") -> None:
        self.name = name
        self.records: list[GPUReading] = []
        self.batches: list[int] = []
        self.down = False
        self.permanent = False
        self.down_at_open = False
        self.crash = False
        self.closed = False

    def _fail(self) -> None:
        raise ExportError(f"{self.name} is down", transient=not self.permanent)

    async def open(self) -> None:
        if self.down_at_open:
            self._fail()

    async def export(self, batch: Sequence[GPUReading]) -> None:
        await asyncio.sleep(0)
        if self.crash:
            self.crash = False
            raise KeyError("a bug in the backend client")
        if self.down:
            self._fail()
        self.records.extend(batch)
        self.batches.append(len(batch))

    async def health(self) -> bool:
        return not self.down

    async def close(self) -> None:
        self.closed = True


def uuids(records: Sequence[GPUReading]) -> list[str]:
    return [r.gpu_uuid for r in records]


def dropped(metrics: Metrics, name: str, reason: str) -> float:
    return float(metrics.export_dropped.labels(name, reason)._value.get())


async def test_batches_by_size_then_by_time() -> None:
    backend = Backend()
    delivery = Delivery([backend], Metrics(), fast_delivery(batch_size=10, flush_interval=0.05))
    async with delivering(delivery):
        delivery.submit([reading(n) for n in range(25)])
        await eventually(lambda: len(backend.records) == 25)
    assert backend.batches == [10, 10, 5]
    assert uuids(backend.records) == [reading(n).gpu_uuid for n in range(25)]
    assert backend.closed


async def test_transient_failures_are_retried_until_delivered_once() -> None:
    backend, metrics = Backend(), Metrics()
    delivery = Delivery([backend], metrics, fast_delivery())
    async with delivering(delivery):
        await eventually(delivery.healthy)
        backend.down = True
        delivery.submit([reading(n) for n in range(3)])
        await eventually(lambda: metrics.export_failure.labels("mem")._value.get() >= 3)
        assert not delivery.healthy()
        backend.down = False
        await eventually(lambda: len(backend.records) == 3)
        assert delivery.healthy()
    assert len(set(uuids(backend.records))) == 3
    assert metrics.export_success.labels("mem")._value.get() == 3


async def test_unexpected_exception_is_retried_not_fatal() -> None:
    backend = Backend()
    backend.crash = True
    delivery = Delivery([backend], Metrics(), fast_delivery())
    async with delivering(delivery):
        delivery.submit([reading(1)])
        await eventually(lambda: len(backend.records) == 1)


async def test_permanent_failure_drops_the_batch_and_moves_on(log_output: Any) -> None:
    backend, metrics = Backend(), Metrics()
    delivery = Delivery([backend], metrics, fast_delivery())
    async with delivering(delivery):
        backend.down = backend.permanent = True
        delivery.submit([reading(n) for n in range(4)])
        await eventually(lambda: dropped(metrics, "mem", "permanent") == 4)
        backend.down = False
        delivery.submit([reading(9)])
        await eventually(lambda: len(backend.records) == 1)
    assert "export failed permanently" in log_output.getvalue()


async def test_down_at_startup_is_not_ready_and_records_wait() -> None:
    backend = Backend()
    backend.down_at_open = True
    delivery = Delivery([backend], Metrics(), fast_delivery())
    assert not delivery.healthy()
    async with delivering(delivery):
        delivery.submit([reading(n) for n in range(5)])
        await asyncio.sleep(0.2)
        assert not delivery.healthy()
        assert delivery.waiting() == {"mem": 5}
        backend.down_at_open = False
        await eventually(lambda: len(backend.records) == 5)
        assert delivery.healthy()


async def test_full_queue_drops_newest_and_counts_them() -> None:
    backend, metrics = Backend(), Metrics()
    delivery = Delivery([backend], metrics, fast_delivery(batch_size=5, queue_size=10))
    for n in range(4):
        delivery.submit([reading(n * 4 + i) for i in range(4)])  # never blocks, not even unrun
    assert delivery.waiting() == {"mem": 10}
    assert dropped(metrics, "mem", "queue_full") == 6
    assert metrics.export_queue.labels("mem")._value.get() == 10
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
        assert not delivery.healthy()


async def test_spool_takes_overflow_and_keeps_order(tmp_path: Path) -> None:
    backend, metrics = Backend(), Metrics()
    backend.down = True
    delivery = Delivery([backend], metrics, fast_delivery(batch_size=4, queue_size=8, spool_dir=tmp_path))
    async with delivering(delivery):
        for n in range(50):
            delivery.submit([reading(n)])
        assert delivery.waiting() == {"mem": 50}
        assert metrics.spool_bytes.labels("mem")._value.get() > 0
        backend.down = False
        await eventually(lambda: len(backend.records) == 50)
    assert uuids(backend.records) == [reading(n).gpu_uuid for n in range(50)]
    assert dropped(metrics, "mem", "queue_full") == 0
    assert metrics.spool_bytes.labels("mem")._value.get() == 0
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
