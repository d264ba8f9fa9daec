"""gpuid started in-process with a rendered container environment, against the simulated cluster.

What the test changes in a rendered environment to run it here is in
``started_env`` and nothing else: the cluster name a user sets, where the
kubeconfig and the scratch directories are, and backends that are down
(a loopback port nobody listens on). ``start_each`` runs a share of the
environments in a worker process with a simulated cluster of its own.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from gpuid.app import App
from gpuid.config import load_settings
from gpuid.log import configure_logging
from gpuid.sim import SimApiServer, SimCluster, bundled_capture

from .combinations import Rendering
from .conftest import sample
from .manifests import environment
from .stack import free_port

NODE, CAPTURE = "gpu-node-1", "gpuid-h100-sxm-x8"
GPUS = len(bundled_capture(CAPTURE).gpu_uuids())
AT_ONCE = 8  # gpuid instances running together in one event loop (much of their time is waiting)
Start = tuple[int, dict[str, str], set[str], str]  # index, rendered environment, lanes it selects, rendering


def rendered_env(r: Rendering) -> dict[str, str]:
    """The container's environment; a Secret's value stands in, NODE_NAME is the node to scan."""
    env = {}
    for name, value in environment(r.docs, r.workload).items():
        if isinstance(value, dict):  # valueFrom: the downward API or a Secret
            env[name] = NODE if name == "NODE_NAME" else f"from-{next(iter(value))}"
        else:
            env[name] = str(value)
    return env


def started_env(env: dict[str, str], index: int, work: Path, kubeconfig: Path, closed: int) -> dict[str, str]:
    """What this test changes in a rendered environment to run it here, and nothing else."""
    started = {
        **env,
        "CLUSTER_NAME": "compose",  # the user's to set: gpuid refuses the base's placeholder
        "KUBECONFIG": str(kubeconfig),
        "SERVER_PORT": "0",
        "SHUTDOWN_GRACE": "0.2s",  # what the down backends did not take is left behind without waiting 20 s
    }
    if "LEASE_NAMESPACE" in env:  # from the downward API: each replica here is a pod of its own namespace
        started |= {"POD_NAME": f"gpuid-{index}", "LEASE_NAMESPACE": f"gpuid-{index}"}
    for path in ("SPOOL_DIR", "BUG_REPORT_DIR"):
        if path in env:
            started[path] = str(work / f"{index}-{path.lower()}")
    # Every backend is down: a loopback port nobody listens on.
    if "S3_BUCKET" in env:
        started |= {"S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}", "S3_REGION": "us-east-1"}
    if "POSTGRES_HOST" in env:
        started |= {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(closed)}
    if "HTTP_ENDPOINT" in env:
        started["HTTP_ENDPOINT"] = f"http://127.0.0.1:{closed}/readings"
    return started


def lanes_in(metrics: str) -> set[str]:
    """The exporters that have a delivery lane: a ``gpuid_export_queue_depth`` series from start-up on."""
    return set(re.findall(r'^gpuid_export_queue_depth\{exporter="([^"]+)"\}', metrics, re.M))


def up_in(metrics: str) -> set[str] | None:
    """The exporters ``gpuid_exporter_up`` reports on; None while gpuid does not expose it."""
    found = set(re.findall(r'^gpuid_exporter_up\{exporter="([^"]+)"\}', metrics, re.M))
    return found if "# TYPE gpuid_exporter_up " in metrics else None


def received_everything(metrics: str, lanes: set[str]) -> bool:
    """Every GPU scanned, and every lane holds or has delivered each record."""
    return sample(metrics, "gpuid_gpus_observed") == GPUS and all(
        sample(metrics, "gpuid_export_success_total", exporter=lane)
        + sample(metrics, "gpuid_export_queue_depth", exporter=lane)
        >= GPUS
        for lane in lanes
    )


async def run_gpuid(env: dict[str, str], session: aiohttp.ClientSession) -> str:
    """Start gpuid in-process, wait until every lane has the scanned records; its /metrics then."""
    app = App(load_settings(env))
    task = asyncio.create_task(app.run(), name="gpuid-under-test")
    metrics = ""
    try:
        async with asyncio.timeout(30):
            while not metrics or not received_everything(metrics, lanes_in(metrics)):
                await asyncio.sleep(0.1)
                assert not task.done(), f"gpuid stopped: {task.result()}"
                if app.server.port is not None:
                    async with session.get(f"http://127.0.0.1:{app.server.port}/metrics") as resp:
                        metrics = await resp.text()
        return metrics
    except TimeoutError:
        gpus = sample(metrics, "gpuid_gpus_observed")
        waiting = {
            lane: sample(metrics, "gpuid_export_queue_depth", exporter=lane) for lane in lanes_in(metrics)
        }
        pytest.fail(f"records did not reach every lane within 30 s: {gpus:.0f} GPUs observed, {waiting}")
    finally:
        app.stop()
        assert await task == 0


def start_each(starts: list[Start], work: Path, logging: tuple[str, str]) -> list[str]:
    """In a worker process: a simulated cluster of its own, gpuid started with each environment; problems."""
    configure_logging(*logging)  # as the rendered settings ask, what gpuid's command line would set up
    return asyncio.run(start_in_cluster(starts, work))


async def start_in_cluster(starts: list[Start], work: Path) -> list[str]:
    cluster = SimCluster()
    cluster.add_node(NODE, capture=CAPTURE)
    cluster.add_pod(f"dp-{NODE}", node=NODE)
    closed = free_port()  # every backend is down: a loopback port nobody listens on
    at_once = asyncio.Semaphore(AT_ONCE)

    async def check(index: int, env: dict[str, str], lanes: set[str], name: str) -> str | None:
        try:
            async with at_once:
                metrics = await run_gpuid(started_env(env, index, work, kubeconfig, closed), session)
        except (Exception, pytest.fail.Exception) as e:  # every environment is tried; all failures reported
            return f"{name}: {e}"
        if lanes_in(metrics) != lanes:
            return f"{name}: lanes {sorted(lanes_in(metrics))}, selected {sorted(lanes)}"
        up = up_in(metrics)  # once gpuid exposes gpuid_exporter_up, it reports on exactly those exporters
        return None if up == lanes else f"{name}: gpuid_exporter_up for {sorted(up or ())}"

    async with SimApiServer(cluster, bookmark_interval=0.2) as server, aiohttp.ClientSession() as session:
        kubeconfig = server.write_kubeconfig(work / f"kubeconfig-{starts[0][0]}")
        return [p for p in await asyncio.gather(*(check(*start) for start in starts)) if p]
