"""Writes the node labels of ``gpuid.labels.scheme`` after each successful scan, cheaply and safely.

A scan's callback only records the labels a node should carry and queues the
node; a few writer tasks send one JSON merge patch per node that needs one.
What the node carries now comes from the node watch (``NodeDirectory``
keeps the labels under our prefix, and is told what each PATCH answered),
so a rescan that finds the same GPUs costs no request at all. A scan with
more GPUs than the scheme's caps writes nothing (``too_many``). Forbidden
(RBAC) and Invalid (a value the API server refuses) are permanent: counted, logged with the node, not retried.
Other failures are retried a few times with backoff; the next scan of the
node tries again anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from gpuid.errors import ApiError
from gpuid.kube.api import call
from gpuid.kube.nodes import NodeDirectory
from gpuid.kube.objects import PodInfo
from gpuid.labels.scheme import MAX_GPUS, MAX_LABELS, LabelSettings, desired_labels, label_patch, owned
from gpuid.metrics import Metrics
from gpuid.records import GPUReading
from gpuid.retry import Backoff

log = structlog.get_logger("gpuid.labels")
MERGE_PATCH = "application/merge-patch+json"
WRITERS = 4  # concurrent PATCHes: enough for a fleet-wide sweep, gentle on the API server
ATTEMPTS = 5
PERMANENT = {403: "forbidden", 404: "not_found", 422: "invalid"}


class NodeLabeller:
    def __init__(self, settings: LabelSettings, core: Any, nodes: NodeDirectory, metrics: Metrics) -> None:
        self._prefix = settings.prefix
        self._core = core  # kubernetes_asyncio CoreV1Api (REST)
        self._nodes = nodes  # what each node carries now, under our prefix
        self._metrics = metrics
        self._wanted: dict[str, dict[str, str]] = {}  # node -> labels from its latest scan, not yet written
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def on_scanned(self, pod: PodInfo, readings: Sequence[GPUReading]) -> None:
        """Scanner callback: queue the node unless it already carries these labels."""
        if not pod.node:
            return
        desired = desired_labels(self._prefix, readings)
        if desired is None:  # input, not a plan: leave the Node as it is
            self._wanted.pop(pod.node, None)
            self._metrics.node_labels.labels("too_many").inc()
            log.warning(
                "too many GPUs to label the node; no labels written",
                node=pod.node,
                pod=pod.source,
                gpus=len(readings),
                max_gpus=MAX_GPUS,
                max_labels=MAX_LABELS,
            )
            return
        if self._nodes.readable and label_patch(self._nodes.owned_labels(pod.node), desired) is None:
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
                patch = label_patch(self._nodes.owned_labels(node), desired)
            if patch is None:  # the node caught up meanwhile (another scan's patch)
                self._metrics.node_labels.labels("unchanged").inc()
                return
            try:
                await self._patch(node, patch)
            except ApiError as e:
                status, body = e.status or 0, str(e)
            else:
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

    async def _patch(self, node: str, labels: Mapping[str, str | None]) -> None:
        updated = await call(
            self._core.patch_node,
            node,
            {"metadata": {"labels": labels}},
            what=f"patch labels of node {node}",
            _content_type=MERGE_PATCH,
        )
        current = ((updated or {}).get("metadata") or {}).get("labels") or {}
        self._nodes.note_labels(node, owned(self._prefix, current))
