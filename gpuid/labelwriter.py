"""Writes the node labels of ``gpuid.labels`` after each successful scan, cheaply and safely.

A scan's callback only records the labels a node should carry and queues the
node; a few writer tasks send one JSON merge patch per node that needs one.
What the node carries now comes from the node watch (``NodeDirectory``
keeps the labels under our prefix), so a rescan that finds the same GPUs
costs no request at all. Forbidden (RBAC) and Invalid (a value the API
server refuses) are permanent: counted, logged with the node, not retried.
Other failures are retried a few times with backoff; the next scan of the
node tries again anyway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import structlog

from gpuid.cluster import NodeDirectory, NodeInfo, PodInfo
from gpuid.errors import Backoff
from gpuid.labels import LabelSettings, desired_labels, label_patch, owned
from gpuid.metrics import Metrics
from gpuid.records import GPUReading

log = structlog.get_logger("gpuid.labels")
MERGE_PATCH = "application/merge-patch+json"
WRITERS = 4  # concurrent PATCHes: enough for a fleet-wide sweep, gentle on the API server
ATTEMPTS = 5
PERMANENT = {403: "forbidden", 404: "not_found", 422: "invalid"}


class NodeLabeller:
    def __init__(self, settings: LabelSettings, core: Any, nodes: NodeDirectory, metrics: Metrics) -> None:
        self._prefix = settings.prefix
        self._core = core  # kubernetes_asyncio CoreV1Api (REST)
        self._nodes = nodes
        self._metrics = metrics
        self._current: dict[str, dict[str, str]] = {}  # node -> labels under our prefix, as last seen
        self._wanted: dict[str, dict[str, str]] = {}  # node -> labels from its latest scan, not yet written
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        nodes.listeners.append(self._on_node)

    def _on_node(self, kind: str, node: NodeInfo) -> None:
        if kind == "DELETED":
            self._current.pop(node.name, None)
        else:
            self._current[node.name] = dict(node.owned_labels)

    def on_scanned(self, pod: PodInfo, readings: Sequence[GPUReading]) -> None:
        """Scanner callback: queue the node unless it already carries these labels."""
        if not pod.node:
            return
        desired = desired_labels(self._prefix, readings)
        if self._nodes.readable and label_patch(self._current.get(pod.node, {}), desired) is None:
            self._metrics.node_labels.labels("unchanged").inc()
            return
        if pod.node not in self._wanted:
            self._queue.put_nowait(pod.node)
        self._wanted[pod.node] = desired  # a newer scan replaces a queued one

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for i in range(WRITERS):
                tg.create_task(self._writer(), name=f"node-labeller-{i}")

    async def _writer(self) -> None:
        while True:
            node = await self._queue.get()
            desired = self._wanted.pop(node, None)
            if desired is not None:
                await self._write(node, desired)

    async def _write(self, node: str, desired: Mapping[str, str]) -> None:
        backoff = Backoff(base=1.0, cap=30.0)
        for attempt in range(1, ATTEMPTS + 1):
            patch: Mapping[str, str | None] | None = desired  # nodes unreadable: set, never remove
            if self._nodes.readable:
                patch = label_patch(self._current.get(node, {}), desired)
            if patch is None:  # the node caught up meanwhile (another scan's patch)
                self._metrics.node_labels.labels("unchanged").inc()
                return
            try:
                status, body = await self._patch(node, patch)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                status, body = 0, str(e) or type(e).__name__
            if status == 200:
                self._metrics.node_labels.labels("patched").inc()
                log.info("node labels updated", node=node, labels=len(desired), changed=len(patch))
                return
            result = PERMANENT.get(status, "error")
            self._metrics.node_labels.labels(result).inc()
            if result != "error" or attempt == ATTEMPTS:
                log.error("node labels not updated", node=node, status=status, result=result, error=body)
                return
            delay = backoff.next_delay()
            log.warning("node label update failed, retrying", node=node, status=status, retry_in=delay)
            await asyncio.sleep(delay)

    async def _patch(self, node: str, labels: Mapping[str, str | None]) -> tuple[int, str]:
        resp: aiohttp.ClientResponse = await self._core.patch_node(
            node,
            {"metadata": {"labels": labels}},
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=30),
        )
        async with resp:
            body = await resp.read()
        if resp.status == 200:
            updated = json.loads(body).get("metadata", {}).get("labels") or {}
            self._current[node] = owned(self._prefix, updated)
        return resp.status, body.decode("utf-8", "replace")[:300]
