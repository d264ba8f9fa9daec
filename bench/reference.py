"""The floor gpuid's sweep is compared with: the least a client can do for the same answer.

kubernetes_asyncio's WebSocket exec of the same ``nvidia-smi -q -x`` in every
pod at the same concurrency, stdout frames joined, then a bare
``xml.etree.ElementTree`` parse pulling each GPU's UUID. Nothing else: no
watch, no readiness, no retries, no other fields, no records, no export, no
logs. gpuid doing all of that should cost no more than this.
"""

from __future__ import annotations

import asyncio
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
    async with WsApiClient(configuration=conf) as api:
        core = client.CoreV1Api(api)

        async def one(pod: str) -> int:
            async with gate:
                return len(await _uuids(core, namespace, pod))

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(p) for p in pods))
        return time.perf_counter() - started, sum(counts)
