"""``gpuid demo``: the real pipeline against a simulated cluster, no Kubernetes needed.

Starts the simulated API server in-process, points gpuid at it through a
kubeconfig, exactly as a user would point it at a real cluster, waits until
every simulated pod is scanned, then shuts down the normal way (flushing the
exporters) so stdout holds one record per simulated GPU. ``--snapshot``
runs ``gpuid snapshot`` against the same simulated cluster instead.
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


async def run_demo(settings: Settings, *, nodes: int = 3, snapshot: bool = False) -> int:
    cluster = demo_cluster(nodes)
    async with SimApiServer(cluster) as server:
        with tempfile.TemporaryDirectory(prefix="gpuid-demo-") as tmp:
            kubeconfig = server.write_kubeconfig(Path(tmp) / "kubeconfig")
            if snapshot:
                return await run_snapshot(dataclasses.replace(settings, kubeconfig=str(kubeconfig)))
            app = App(dataclasses.replace(settings, kubeconfig=str(kubeconfig), server_port=0))
            task = asyncio.create_task(app.run(), name="gpuid")
            try:
                async with asyncio.timeout(DEMO_DEADLINE):
                    while scans_done(app) < nodes and not task.done():  # noqa: ASYNC110 - polls a metric
                        await asyncio.sleep(0.05)
            except TimeoutError:
                log.error("demo did not scan every pod in time", scanned=scans_done(app), pods=nodes)
            app.stop()
            code = await task
    log.info("demo finished", pods=nodes, scanned=int(scans_done(app)))
    return code if scans_done(app) >= nodes else 1
