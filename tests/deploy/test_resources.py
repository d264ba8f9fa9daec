"""The memory requests and limits are sized from gpuid's measured peak RSS, and stay so.

gpuid runs against the simulated cluster in the shape of each workload (the
central Deployment sweeping a few hundred pods; one per-node agent), with
every backend loaded and unreachable, so records pile up in memory: the worst
case short of a fleet sweep. Its peak RSS (VmHWM) must fit the request, and the
limit must leave half as much again for fragmentation and larger fleets.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.app import Sim

from .manifests import container, mebibytes, render, workloads
from .stack import free_port

PODS = 300
UNREACHABLE = {
    "EXPORTER_TYPE": "stdout,s3,postgres,http",
    "S3_BUCKET": "gpuid-records",
    "S3_REGION": "us-east-1",
    "S3_ENDPOINT_URL": "http://127.0.0.1:9",
    "S3_FORCE_PATH_STYLE": "true",
    "AWS_ACCESS_KEY_ID": "unused",
    "AWS_SECRET_ACCESS_KEY": "unused",
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_PORT": "9",
    "HTTP_ENDPOINT": "http://127.0.0.1:9/readings",
}


async def peak_rss_mib(sim: Sim, gpus: int, **env: str) -> float:
    """Run gpuid until it has observed ``gpus`` GPUs; its VmHWM in MiB."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuid",
        env={
            **os.environ,
            **UNREACHABLE,
            "CLUSTER_NAME": "sizing",
            "KUBECONFIG": str(sim.kubeconfig),
            "SERVER_PORT": str(port),
            "LOG_LEVEL": "error",
            "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE": "1s",
            **env,
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(45), aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(0.3)
                assert proc.returncode is None, "gpuid exited"
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        text = await resp.text()
                except aiohttp.ClientConnectionError:
                    continue
                observed = re.search(r"^gpuid_gpus_observed (\S+)$", text, re.M)
                if observed and float(observed.group(1)) >= gpus:
                    break
        status = await asyncio.to_thread(Path(f"/proc/{proc.pid}/status").read_text)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await proc.wait()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.M)
    assert match, status
    return int(match.group(1)) / 1024


def memory_of(overlay: str) -> tuple[float, float]:
    resources = container(workloads(render(overlay))[0])["resources"]
    return mebibytes(resources["requests"]["memory"]), mebibytes(resources["limits"]["memory"])


def add_nodes(sim: Sim, count: int) -> None:
    for i in range(count):
        sim.cluster.add_node(f"gpu-{i}", capture="gpuid-h100-sxm-x8")
        sim.cluster.add_pod(f"dp-gpu-{i}", node=f"gpu-{i}")


@pytest.mark.slow
async def test_deployment_memory_fits_a_sweep_of_hundreds_of_pods(sim: Sim) -> None:
    add_nodes(sim, PODS)
    peak = await peak_rss_mib(sim, PODS * 8)
    request, limit = memory_of("stdout")
    print(f"\nDeployment: peak RSS {peak:.0f} MiB for {PODS} pods ({PODS * 8} GPUs), all backends down")
    assert peak <= request, f"peak RSS {peak:.0f} MiB is above the request of {request:.0f} MiB"
    assert 1.5 * peak <= limit, (
        f"peak RSS {peak:.0f} MiB leaves too little room under the limit of {limit:.0f} MiB"
    )


@pytest.mark.slow
async def test_daemonset_memory_fits_one_node(sim: Sim) -> None:
    add_nodes(sim, 20)
    peak = await peak_rss_mib(sim, 8, NODE_NAME="gpu-7")
    request, limit = memory_of("daemonset")
    print(f"\nDaemonSet: peak RSS {peak:.0f} MiB for one 8-GPU node, all backends down")
    assert peak <= request, f"peak RSS {peak:.0f} MiB is above the request of {request:.0f} MiB"
    assert 1.5 * peak <= limit, (
        f"peak RSS {peak:.0f} MiB leaves too little room under the limit of {limit:.0f} MiB"
    )
