"""The app under test: gpuid in-process against the simulated cluster, and how to wait on it.

``running_app`` starts the real ``App`` pointed at a ``Sim`` through its
kubeconfig, as a user would, with a ``MemoryExporter`` injected unless the
test names exporters; ``eventually`` polls a condition with a deadline;
``sample`` reads one metric through the registry's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpuid.app import App
from gpuid.config import load_settings
from gpuid.exporters import build_exporters
from gpuid.metrics import Metrics
from gpuid.sim import SimApiServer, SimCluster
from tests.support.memory import MemoryExporter

H100 = "gpuid-h100-sxm-x8"
GB200 = "gpuid-gb200-x4"
A100_MIG = "telegraf-a100-sxm4-mig"


@dataclass
class Sim:
    cluster: SimCluster
    server: SimApiServer
    kubeconfig: Path


def add_gpu_node(sim: Sim, name: str, capture: str = H100, *, ready: bool = True) -> None:
    """A node with a device-plugin pod ``dp-<name>`` answering nvidia-smi with ``capture``."""
    sim.cluster.add_node(name, capture=capture)
    sim.cluster.add_pod(f"dp-{name}", node=name, ready=ready)


DRIVER_LABELS = {"app.kubernetes.io/component": "nvidia-driver", "app": "nvidia-driver-daemonset"}
DRIVER_CONTAINERS = ("nvidia-driver-ctr", "nvidia-peermem-ctr")
ELECTION = {  # leader election with short timings, for tests with several replicas
    "LEADER_ELECTION": "true",
    "LEASE_NAMESPACE": "gpuid",
    "LEASE_DURATION": "2s",
    "LEASE_RENEW_DEADLINE": "1s",
    "LEASE_RETRY_PERIOD": "0.2s",
}


def driver_pod_name(node: str) -> str:
    return f"nvidia-driver-daemonset-{node}"


def add_driver_node(
    sim: Sim, node: str, *, device_plugin: bool = True, capture: str = "gpuid-gb200-x4"
) -> str:
    """A GPU node with a ready driver pod (two containers, as the GPU Operator runs it)."""
    sim.cluster.add_node(node, capture=capture)
    if device_plugin:
        sim.cluster.add_pod(f"dp-{node}", node=node)
    name = driver_pod_name(node)
    sim.cluster.add_pod(name, node=node, labels=DRIVER_LABELS, containers=DRIVER_CONTAINERS)
    return name


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """One sample of ``metrics``' registry (0 when the series does not exist)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0, what: str = "condition"
) -> None:
    """Poll ``check`` (plain or async) until it holds; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


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
        return sample(self.app.metrics, name, **labels)

    def uuids(self, pod: str | None = None) -> list[str]:
        return [r.gpu_uuid for r in self.memory.records if pod is None or r.source.endswith("/" + pod)]


@contextlib.asynccontextmanager
async def running_app(sim: Sim, **env: str) -> AsyncIterator[Running]:
    """The App against ``sim``: a ``MemoryExporter`` first, then the exporters ``env`` selects (if any)."""
    values = {
        "CLUSTER_NAME": "test",
        "KUBECONFIG": str(sim.kubeconfig),
        "SERVER_PORT": "0",
        "TIMEOUT": "5s",
        "SHUTDOWN_GRACE": "5s",
        "EXPORT_FLUSH_INTERVAL": "0.05",
        **env,
    }
    settings = load_settings(values)
    selects = any(k.startswith("EXPORTER_") for k in env)
    exporters = [MemoryExporter(), *(build_exporters(settings.exporters) if selects else ())]
    app = App(settings, exporters=exporters)
    task = asyncio.create_task(app.run(), name="gpuid-under-test")
    try:
        yield Running(app, task)
    finally:
        app.stop()
        assert await task == 0
