"""The watch survives what API servers do: 410 Gone, dropped streams, 5xx and 429."""

from __future__ import annotations

from gpuid.app import App
from gpuid.config import load_settings

from .conftest import Sim, running_app, wait_for
from .test_pipeline import GB200, add_gpu_node


async def test_expired_resource_version_relists_and_finds_pods_added_meanwhile(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    async with running_app(sim) as run:
        await wait_for(lambda: len(run.memory.records) == 4)
        sim.cluster.fail_requests(2, status=503, path_contains="watch")
        sim.cluster.drop_watches()
        add_gpu_node(sim, "n2", GB200)  # appears while gpuid is disconnected
        sim.cluster.compact()  # ...and the history it would resume from is gone
        await wait_for(lambda: len(run.uuids("dp-n2")) == 4, what="the pod added during the disconnect")
        assert run.sample("gpuid_watch_restarts_total", reason="expired") >= 1
        assert run.sample("gpuid_watch_restarts_total", reason="error") >= 1
        assert len(run.uuids("dp-n1")) == 4  # the relist did not rescan what was done


async def test_dropped_watch_resumes_without_missing_or_repeating_events(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    async with running_app(sim) as run:
        await wait_for(lambda: len(run.memory.records) == 4)
        for i in range(3):
            sim.cluster.drop_watches()
            add_gpu_node(sim, f"x{i}", GB200)
        await wait_for(lambda: len(run.memory.records) == 16, what="every pod across three drops")
        assert sorted(r.node for r in run.memory.records).count("x2") == 4
        assert run.sample("gpuid_scans_total", result="success") == 4


async def test_server_errors_and_throttling_on_list_are_retried(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    sim.cluster.fail_requests(2, status=500, path_contains="/pods")
    sim.cluster.fail_requests(1, status=429, path_contains="/pods")
    async with running_app(sim) as run:
        await wait_for(lambda: len(run.memory.records) == 4, timeout=20)
        assert run.sample("gpuid_watch_restarts_total", reason="error") >= 2
        ready, why = run.app.readiness()
        assert ready, why


async def test_per_node_mode_only_sees_its_own_node(sim: Sim) -> None:
    add_gpu_node(sim, "mine", GB200)
    add_gpu_node(sim, "other", GB200)
    async with running_app(sim, NODE_NAME="mine") as run:
        await wait_for(lambda: len(run.memory.records) == 4)
        assert {r.node for r in run.memory.records} == {"mine"}
        assert run.memory.records[0].machine is not None
        assert sim.cluster.request_counts["exec"] == 1


async def test_forbidden_pod_watch_stops_gpuid_with_exit_1(sim: Sim) -> None:
    sim.cluster.fail_requests(1, status=403, path_contains="/pods")
    app = App(
        load_settings(
            {
                "CLUSTER_NAME": "t",
                "KUBECONFIG": str(sim.kubeconfig),
                "EXPORTER_TYPE": "memory",
                "SERVER_PORT": "0",
            }
        )
    )
    assert await app.run() == 1  # permanent: not retried forever, the pod restarts with a clear log line
