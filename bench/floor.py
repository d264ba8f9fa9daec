"""The true floor of a sweep: the least any client must do to read every node's GPU identity.

A bare aiohttp WebSocket exec of ``nvidia-smi -q -x`` per pod (the same URL,
token, TLS and ``v4.channel.k8s.io`` framing a Kubernetes client uses, with
no Kubernetes library), stdout frames joined, then the identity fields picked
out of the bytes with ``bytes.find``: no XML parser, no validation, no
records, no export, no logs, no watch, no retries. Whatever gpuid does on
top costs CPU above this, which is why the benchmark prints gpuid's CPU per
pod as a multiple of this one's.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yaml

from gpuid.smi.commands import XML_COMMAND

PROTOCOL = "v4.channel.k8s.io"
FIELDS = tuple(
    (b"<" + name + b">", name.decode())
    for name in (
        b"uuid", b"serial", b"product_name", b"product_architecture", b"board_part_number",
        b"vbios_version", b"module_id", b"pci_bus_id", b"chassis_serial_number", b"current_mig",
    )
)  # fmt: skip


def identity(xml: bytes) -> list[dict[str, str]]:
    """Each ``<gpu>``'s identity fields, by byte search (the first occurrence inside the GPU wins)."""
    gpus = []
    start = xml.find(b"<gpu id=")
    while start != -1:
        end = xml.find(b"</gpu>", start)
        gpu = {}
        for tag, name in FIELDS:
            at = xml.find(tag, start, end)
            if at != -1:
                at += len(tag)
                gpu[name] = xml[at : xml.find(b"<", at)].decode()
        gpus.append(gpu)
        start = xml.find(b"<gpu id=", end)
    return gpus


def _target(kubeconfig: str) -> tuple[str, str, ssl.SSLContext | None]:
    """Server URL, bearer token and TLS context of the kubeconfig's current context."""
    with open(kubeconfig) as f:
        conf: dict[str, Any] = yaml.safe_load(f)
    context = next(c["context"] for c in conf["contexts"] if c["name"] == conf["current-context"])
    cluster = next(c["cluster"] for c in conf["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in conf["users"] if u["name"] == context["user"])
    tls = None
    if "certificate-authority-data" in cluster:
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        tls = ssl.create_default_context(cadata=ca)
    return cluster["server"], user["token"], tls


async def floor_sweep(
    kubeconfig: str, namespace: str, pods: list[str], workers: int, container: str = "nvidia-device-plugin"
) -> tuple[float, int]:
    """Seconds to read every pod's GPU identity with ``workers`` execs at a time; and the GPU count."""
    server, token, tls = _target(kubeconfig)
    base = server.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    query = urlencode(
        [("command", c) for c in XML_COMMAND]
        + [("container", container), ("stdout", "true"), ("stderr", "true")]
    )
    headers = {"Authorization": f"Bearer {token}"}
    gate = asyncio.Semaphore(workers)
    connector = aiohttp.TCPConnector(limit=workers + 8, ssl=tls if tls is not None else True)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def one(pod: str) -> int:
            url = f"{base}/api/v1/namespaces/{namespace}/pods/{pod}/exec?{query}"
            async with gate, http.ws_connect(url, protocols=(PROTOCOL,)) as ws:
                stdout = [msg.data[1:] async for msg in ws if len(msg.data) > 1 and msg.data[0] == 1]
            return len(identity(b"".join(stdout)))

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(p) for p in pods))
        return time.perf_counter() - started, sum(counts)
