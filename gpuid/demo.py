"""``gpuid demo``: the real pipeline against a simulated cluster, no Kubernetes needed.

Starts the simulated API server in-process, points gpuid at it through a
kubeconfig, exactly as a user would point it at a real cluster, waits until
every simulated pod is scanned, then shuts down the normal way (flushing the
exporters) so stdout holds one record per simulated GPU. The exit code says
whether that happened: 0 only when every pod was scanned and every exporter
delivered every GPU's record. ``--snapshot`` runs ``gpuid snapshot`` against
the same simulated cluster instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path

import structlog

from gpuid.app import App
from gpuid.config import Settings
from gpuid.sim import SimApiServer, demo_cluster
from gpuid.snapshot import run_snapshot

log = structlog.get_logger("gpuid.demo")
DEMO_DEADLINE = 60.0


def scans_done(app: App) -> float:
    return app.metrics.registry.get_sample_value("gpuid_scans_total", {"result": "success"}) or 0.0


def undelivered(app: App, gpus: int) -> dict[str, int]:
    """Exporters that did not deliver all ``gpus`` records, with how many they did deliver."""
    sample = app.metrics.registry.get_sample_value
    delivered = {
        e.name: int(sample("gpuid_export_success_total", {"exporter": e.name}) or 0) for e in app.exporters
    }
    return {name: n for name, n in delivered.items() if n != gpus}


async def run_demo(settings: Settings, *, nodes: int = 3, snapshot: bool = False) -> int:
    cluster = demo_cluster(nodes)
    async with SimApiServer(cluster) as server:
        with tempfile.TemporaryDirectory(prefix="gpuid-demo-") as tmp:
            kubeconfig = server.write_kubeconfig(Path(tmp) / "kubeconfig")
            kube = dataclasses.replace(settings.kube, kubeconfig=str(kubeconfig))
            if snapshot:
                return await run_snapshot(dataclasses.replace(settings, kube=kube))
            app = App(dataclasses.replace(settings, kube=kube, server_port=0))
            task = asyncio.create_task(app.run(), name="gpuid")
            try:
                async with asyncio.timeout(DEMO_DEADLINE):
                    while scans_done(app) < nodes and not task.done():  # noqa: ASYNC110 - polls a metric
                        await asyncio.sleep(0.05)
            except TimeoutError:
                log.error("demo did not scan every pod in time", scanned=scans_done(app), pods=nodes)
            app.stop()
            code = await task
    gpus = sum(
        len(c.gpu_uuids()) for i in range(1, nodes + 1) if (c := cluster.capture_for_node(f"gpu-node-{i}"))
    )
    short = undelivered(app, gpus)
    log.info("demo finished", pods=nodes, scanned=int(scans_done(app)), gpus=gpus, undelivered=short or None)
    if short:
        log.error("demo records were not all delivered", expected=gpus, delivered=short)
    return code if scans_done(app) >= nodes and not short else 1
