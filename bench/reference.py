"""The reference client: what a small script on the stock Kubernetes library costs for the same answer.

kubernetes_asyncio's WebSocket exec of the same ``nvidia-smi -q -x`` in every
pod at the same concurrency (the library as shipped: its session consults the
environment on every request), stdout frames joined, then a bare
``xml.etree.ElementTree`` parse pulling each GPU's UUID. Nothing else: no
watch, no readiness, no retries, no other fields, no records, no export, no
logs. It is not a floor (``bench.floor`` is): without ``gc.freeze()`` the
cyclic collector walking the library's ~75,000 long-lived objects adds about
45 % to its CPU, so the start-up heap is frozen first, as gpuid's CLI does.
"""

from __future__ import annotations

import asyncio
import gc
import time
import xml.etree.ElementTree as ET

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.stream import WsApiClient

from gpuid.smi.commands import XML_COMMAND


async def _uuids(core: client.CoreV1Api, namespace: str, pod: str) -> list[str]:
    ctx = await core.connect_get_namespaced_pod_exec(
        pod, namespace, command=XML_COMMAND, container="nvidia-device-plugin",
        stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False,
    )  # fmt: skip
    async with ctx as ws:
        stdout = [
            msg.data[1:]
            async for msg in ws
            if msg.type == aiohttp.WSMsgType.BINARY and len(msg.data) > 1 and msg.data[0] == 1
        ]
    root = ET.fromstring(b"".join(stdout))
    return [gpu.findtext("uuid") or "" for gpu in root.iterfind("gpu")]


async def reference_sweep(
    kubeconfig: str, namespace: str, pods: list[str], workers: int
) -> tuple[float, int]:
    """Seconds to read every pod's GPU UUIDs with ``workers`` execs at a time; and the UUID count."""
    conf = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=conf)
    conf.connection_pool_maxsize = workers + 8  # as gpuid sizes its pool
    gate = asyncio.Semaphore(workers)
    gc.freeze()
    async with WsApiClient(configuration=conf) as api:
        core = client.CoreV1Api(api)

        async def one(pod: str) -> int:
            async with gate:
                return len(await _uuids(core, namespace, pod))

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(p) for p in pods))
        return time.perf_counter() - started, sum(counts)
