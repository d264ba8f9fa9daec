"""A node is never exec'd twice at once by gpuid, and a throttled exec waits as long as it was told.

Two pods on one node (a rollout leaves an old and a new device-plugin pod
ready for a while) are scanned one after the other; a scan of a node whose
bug report is being collected waits for the collection. The simulated API
server's open exec sessions are sampled while it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from tests.bugreport.conftest import annotate, status_of
from tests.support.app import (
    GB200,
    Sim,
    add_driver_node,
    add_gpu_node,
    driver_pod_name,
    eventually,
    running_app,
)


@contextlib.asynccontextmanager
async def most_exec_sessions(sim: Sim) -> AsyncIterator[list[int]]:
    """The most exec WebSockets the sim had open at once while the block ran (sampled every 10 ms)."""
    most = [0]

    async def sample() -> None:
        while True:
            most[0] = max(most[0], sim.server.open_exec_sessions)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(sample(), name="sample-exec-sessions")
    try:
        yield most
    finally:
        task.cancel()
        await asyncio.wait([task])


async def test_pods_on_one_node_are_scanned_in_turn_and_other_nodes_alongside(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    sim.cluster.add_pod("dp-n1-new", node="n1")  # the rollout's second device-plugin pod on n1
    add_gpu_node(sim, "n2", GB200)
    for pod in ("dp-n1", "dp-n1-new", "dp-n2"):
        sim.cluster.set_exec(pod, delay=0.4)
    async with most_exec_sessions(sim) as most, running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 12, what="all three pods")
    assert most[0] == 2  # n1's pods one after the other, n2's beside them (3 without the gate)


async def test_a_scan_waits_for_the_bug_report_being_collected_on_its_node(sim: Sim, tmp_path: Path) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), size=10_000, runtime=1.0)
    env = {"BUG_REPORT_ENABLED": "true", "BUG_REPORT_DIR": str(tmp_path), "BUG_REPORT_TIMEOUT": "10s"}
    async with running_app(sim, **env) as run:
        await eventually(lambda: len(run.memory.records) == 4, what="the first scan")
        await annotate(sim, "n1", "r1")
        await eventually(lambda: (status_of(sim, "n1") or {}).get("result") == "running", what="collection")
        async with most_exec_sessions(sim) as most:
            sim.cluster.restart_container("dp-n1")  # due for a rescan while the report runs
            await eventually(lambda: len(run.memory.records) == 8, what="the rescan")
            assert (status_of(sim, "n1") or {}).get("result") == "success"  # the report finished first
        assert most[0] == 1


async def test_a_throttled_scan_is_retried_no_sooner_than_retry_after(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    sim.cluster.fail_requests(1, status=429, path_contains="/exec", retry_after=3)
    async with running_app(sim, TIMEOUT="2s") as run:  # 3 s of advice do not fit in the scan's 2 s
        await eventually(lambda: run.sample("gpuid_scans_total", result="exec_error") == 1, what="a failure")
        await asyncio.sleep(1.5)  # the scanner's own backoff would have retried by now (<= 1 s)
        assert sim.cluster.request_counts["exec"] == 1
        await eventually(lambda: len(run.memory.records) == 4, what="the retry after Retry-After")
