"""The watch survives what API servers do: 410 Gone, dropped streams, 5xx and 429."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from aiohttp import web

from gpuid.app import App
from gpuid.config import load_settings
from gpuid.kube import informer as informer_module
from gpuid.kube.client import KubeClients, connect
from gpuid.kube.informer import Informer
from gpuid.kube.objects import slim_pod
from gpuid.metrics import Metrics
from tests.support.app import GB200, Sim, add_gpu_node, eventually, running_app
from tests.support.memory import MemoryExporter
from tests.support.services import serving


async def test_expired_resource_version_relists_and_finds_pods_added_meanwhile(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 4)
        sim.cluster.fail_requests(2, status=503, path_contains="watch")
        sim.cluster.drop_watches()
        add_gpu_node(sim, "n2", GB200)  # appears while gpuid is disconnected
        sim.cluster.compact()  # ...and the history it would resume from is gone
        await eventually(lambda: len(run.uuids("dp-n2")) == 4, what="the pod added during the disconnect")
        assert run.sample("gpuid_watch_restarts_total", reason="expired") >= 1
        assert run.sample("gpuid_watch_restarts_total", reason="error") >= 1
        assert len(run.uuids("dp-n1")) == 4  # the relist did not rescan what was done


async def test_dropped_watch_resumes_without_missing_or_repeating_events(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 4)
        for i in range(3):
            sim.cluster.drop_watches()
            add_gpu_node(sim, f"x{i}", GB200)
        await eventually(lambda: len(run.memory.records) == 16, what="every pod across three drops")
        assert sorted(r.node for r in run.memory.records).count("x2") == 4
        assert run.sample("gpuid_scans_total", result="success") == 4


async def test_server_errors_and_throttling_on_list_are_retried(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    sim.cluster.fail_requests(2, status=500, path_contains="/pods")
    sim.cluster.fail_requests(1, status=429, path_contains="/pods")
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 4, timeout=20)
        assert run.sample("gpuid_watch_restarts_total", reason="error") >= 2
        ready, why = run.app.readiness()
        assert ready, why


async def test_per_node_mode_only_sees_its_own_node(sim: Sim) -> None:
    add_gpu_node(sim, "mine", GB200)
    add_gpu_node(sim, "other", GB200)
    async with running_app(sim, NODE_NAME="mine") as run:
        await eventually(lambda: len(run.memory.records) == 4)
        assert {r.node for r in run.memory.records} == {"mine"}
        assert run.memory.records[0].machine is not None
        assert sim.cluster.request_counts["exec"] == 1


async def test_forbidden_pod_watch_stops_gpuid_with_exit_1(sim: Sim) -> None:
    sim.cluster.fail_requests(1, status=403, path_contains="/pods")
    settings = load_settings({"CLUSTER_NAME": "t", "KUBECONFIG": str(sim.kubeconfig), "SERVER_PORT": "0"})
    app = App(settings, exporters=[MemoryExporter()])
    assert await app.run() == 1  # permanent: not retried forever, the pod restarts with a clear log line


async def test_a_pod_updated_during_its_scan_is_not_scanned_twice(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    sim.cluster.set_exec("dp-n1", delay=1.0)
    async with running_app(sim) as run:
        await eventually(lambda: run.sample("gpuid_pods_tracked") == 1)
        await asyncio.sleep(0.3)  # the exec is running now
        sim.cluster.label_pod("dp-n1", {"touched": "1"})
        sim.cluster.label_pod("dp-n1", {"touched": "2"})
        await eventually(lambda: len(run.memory.records) == 4)
        await asyncio.sleep(1.5)  # long enough for a second scan to have finished
        assert sim.cluster.request_counts["exec"] == 1
        assert len(run.memory.records) == 4


async def test_sigterm_during_start_up_still_exits_cleanly(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    env = {
        "CLUSTER_NAME": "t",
        "KUBECONFIG": str(sim.kubeconfig),
        "SERVER_PORT": "0",
    }
    app = App(load_settings({**env, "SHUTDOWN_GRACE": "2s"}), exporters=[MemoryExporter()])
    task = asyncio.create_task(app.run())
    app.stop()  # before the scan session ever ran
    assert await asyncio.wait_for(task, 10) == 0


class FakeApiServer:
    """An API server that answers pod lists but ends every watch at once, empty; counts the watches."""

    def __init__(self) -> None:
        self.watches = 0

    async def pods(self, request: web.Request) -> web.Response:
        if request.query.get("watch") in ("True", "true", "1"):
            self.watches += 1
            return web.Response(body=b"", content_type="application/json")
        return web.json_response({"kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": []})


async def informer_against(url: str, tmp_path: Path) -> tuple[Informer, Metrics, KubeClients]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: '{url}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    clients = await connect(str(kubeconfig))
    metrics = Metrics()
    informer = Informer(
        "pod", clients.core.list_namespaced_pod, slim_pod, lambda *_: None, metrics, namespace="ns"
    )
    return informer, metrics, clients


async def test_watches_that_end_empty_at_once_are_backed_off_not_hammered(tmp_path: Path) -> None:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/pods", fake.pods)
    async with serving(app) as url:
        informer, metrics, clients = await informer_against(url, tmp_path)
        try:
            task = asyncio.create_task(informer.run())
            await asyncio.sleep(1.5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await clients.close()
    assert 1 <= fake.watches <= 5  # backoff from 0.5 s doubling, not hundreds of requests a second
    restarts = metrics.registry.get_sample_value("gpuid_watch_restarts_total", {"reason": "error"})
    assert restarts == fake.watches - 1  # one clean, empty ending is normal; the ones after it are not


async def test_a_list_that_never_answers_times_out_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(informer_module, "LIST_READ_TIMEOUT", 0.5)
    requests = 0

    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        requests += 1
        with contextlib.suppress(ConnectionError):
            await reader.read()  # reads the request, never answers, until the client gives up
        writer.close()

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    informer, metrics, clients = await informer_against(f"http://127.0.0.1:{port}", tmp_path)
    try:
        task = asyncio.create_task(informer.run())
        await eventually(lambda: requests >= 2, timeout=10, what="a second list after the first timed out")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await clients.close()
        server.close()
        await server.wait_closed()
    assert metrics.registry.get_sample_value("gpuid_watch_restarts_total", {"reason": "error"}) >= 1
    assert not informer.synced.is_set()
