"""gpuid restarted on a damaged spool: it starts, serves, and delivers every healthy record.

The first process is a ``Delivery`` whose backend never answered (its records
stay spooled, as after a crash); the spool is then damaged with real files;
the second process is the whole ``App`` against the simulated cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from gpuid.delivery.delivery import Delivery
from gpuid.delivery.segment import HEADER
from gpuid.metrics import Metrics
from tests.support.app import H100, Sim, add_gpu_node, eventually, running_app
from tests.support.memory import MemoryExporter
from tests.support.records import fast_delivery, reading


async def spool_then_die(spool_dir: Path, first: int, count: int) -> None:
    """A process that accepted ``count`` records, one segment per 5, and delivered none of them."""
    down = MemoryExporter()
    down.fail_next = 1_000_000
    delivery = Delivery([down], Metrics(), fast_delivery(spool_dir=spool_dir, queue_size=5))
    for n in range(first, first + count, 5):
        delivery.submit([reading(i, node=f"old-{i}") for i in range(n, n + 5)])
    await delivery.drain(0.1)  # the backend is down: everything stays spooled


async def test_restart_on_a_damaged_spool_delivers_the_healthy_segments(sim: Sim, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    await spool_then_die(spool, 1000, 15)
    lane = spool / "memory"
    assert len(list(lane.glob("*.jsonl"))) == 3
    os.mkfifo(lane / "0000000000000100.jsonl")
    (lane / "0000000000000101.jsonl").symlink_to("/dev/zero")
    (lane / "0000000000000102.jsonl").mkdir()
    (lane / "0000000000000103.jsonl").symlink_to(lane / "nowhere")
    good = [reading(n, node="old-x").to_json().encode() for n in (2000, 2001)]
    (lane / "0000000000000050.jsonl").write_bytes(HEADER + good[0] + b"\n[1, 2]\n" + good[1] + b"\n{torn")
    produced = 15 + 4  # the spooled records, and the four lines of segment 50

    add_gpu_node(sim, "n1", H100)
    async with running_app(sim, SPOOL_DIR=str(spool)) as run:
        await eventually(lambda: len(run.memory.records) == 17 + 8, what="spooled and new records")
        url = f"http://127.0.0.1:{run.app.server.port}/readyz"
        async with aiohttp.ClientSession() as http, http.get(url) as answer:
            assert answer.status == 200
        await eventually(lambda: run.app.delivery.waiting()["memory"] == 0)
    spooled = {r.gpu_uuid for r in run.memory.records if r.node.startswith("old-")}
    assert spooled == {reading(n).gpu_uuid for n in (*range(1000, 1015), 2000, 2001)}
    lost = run.sample("gpuid_export_dropped_total", exporter="memory", reason="spool_corrupt")
    assert len(spooled) + lost == produced  # the non-object line and the torn one, nothing else
    assert run.sample("gpuid_spool_errors_total", exporter="memory", error="set_aside") == 4
    assert run.sample("gpuid_spool_errors_total", exporter="memory", error="bad_line") == 2
    assert sorted(p.name for p in lane.iterdir()) == [f"00000000000001{n:02d}.corrupt" for n in range(4)]
