"""Shared fixtures: the simulated cluster over real HTTP, an in-process gpuid, leak checks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from gpuid.app import App
from gpuid.config import load_settings
from gpuid.exporters.memory import MemoryExporter
from gpuid.log import configure_logging
from gpuid.sim import SimApiServer, SimCluster

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Sim:
    cluster: SimCluster
    server: SimApiServer
    kubeconfig: Path


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    """Every test must leave no task running behind it."""
    yield
    me = asyncio.current_task()
    for _ in range(50):
        left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not left:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"tasks left running: {[t.get_name() for t in left]}")


@pytest.fixture(autouse=True)
def _json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug", "json")


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    cluster = SimCluster()
    async with SimApiServer(cluster, bookmark_interval=0.2) as server:
        yield Sim(cluster, server, server.write_kubeconfig(tmp_path / "kubeconfig"))


@dataclass
class Running:
    app: App
    task: asyncio.Task[int]

    @property
    def memory(self) -> MemoryExporter:
        exporter = self.app.exporters[0]
        assert isinstance(exporter, MemoryExporter)
        return exporter

    def sample(self, name: str, **labels: str) -> float:
        return self.app.metrics.registry.get_sample_value(name, labels) or 0.0

    def uuids(self, pod: str | None = None) -> list[str]:
        return [r.gpu_uuid for r in self.memory.records if pod is None or r.source.endswith("/" + pod)]


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")


@contextlib.asynccontextmanager
async def running_app(sim: Sim, **env: str) -> AsyncIterator[Running]:
    values = {
        "CLUSTER_NAME": "test",
        "KUBECONFIG": str(sim.kubeconfig),
        "EXPORTER_TYPE": "memory",
        "SERVER_PORT": "0",
        "TIMEOUT": "5s",
        "SHUTDOWN_GRACE": "5s",
        "EXPORT_FLUSH_INTERVAL": "0.05",
        **env,
    }
    app = App(load_settings(values))
    task = asyncio.create_task(app.run(), name="gpuid-under-test")
    try:
        yield Running(app, task)
    finally:
        app.stop()
        assert await task == 0


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 on a free port (a stand-in peer for a test); yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
