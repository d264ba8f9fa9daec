"""With ``GPU_CHANGE_EVENTS``: claim each change with its Event, report it, then record the node's new state.

Per node, jobs run in scan order (one writer at a time per node; a few
writers across nodes). A job is one scan that changed a node's GPUs:

1. for each change, create its Event (``gpuid.fleet.events.claim``); when
   this attempt created it, the change is reported (counter, ``gpu_changed``
   log line and record) — when a predecessor had, it is not;
2. write the node's new state to its ``gpuid.io/gpus`` annotation: read the
   Node, and patch it under its resourceVersion unless the annotation already
   holds a state with the same or a higher sequence number (a newer writer:
   the other replica, after a handover).

An Event that cannot be created (RBAC, an API server down beyond the
retries) does not hold a change back: it is reported anyway, counted in
``gpuid_gpu_change_errors_total``, since a duplicate after a restart beats
silence. A state that cannot be written is kept in memory for this term.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gpuid.errors import ApiError
from gpuid.fleet.events import claim, event_body
from gpuid.fleet.state import ANNOTATION, Change, NodeGpus, decode, encode, event_name, fits
from gpuid.kube.api import call
from gpuid.metrics import Metrics
from gpuid.retry import Backoff

log = structlog.get_logger("gpuid.fleet")
MERGE_PATCH = "application/merge-patch+json"
WRITERS = 4
ATTEMPTS = 5
MAX_JOBS = 10_000  # scans waiting to be written, all nodes together
Report = Callable[[Change], None]


@dataclass
class Job:
    node: str
    node_uid: str
    prev: NodeGpus  # the state the changes are relative to (names the Events)
    new: NodeGpus
    changes: list[Change]
    report: Report  # counter, log line, record
    stored: Callable[[str, str], None]  # (node, the annotation value the API server now has)
    token: str  # this job's claim: another job (even of this process) never shares it


class StateWriter:
    def __init__(self, core: Any, events_api: Any, metrics: Metrics, instance: str) -> None:
        self._core = core  # CoreV1Api (REST)
        self._events = events_api  # EventsV1Api (REST)
        self._metrics = metrics
        self._instance = instance
        self._jobs: dict[str, deque[Job]] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._count = 0

    def submit(self, job: Job) -> None:
        if self._count >= MAX_JOBS:
            log.error("too many GPU state writes waiting; this one is kept in memory only", node=job.node)
            for change in job.changes:
                job.report(change)
            return
        if job.node not in self._jobs:
            self._queue.put_nowait(job.node)
        self._jobs.setdefault(job.node, deque()).append(job)
        self._count += 1

    def clear(self) -> None:
        """Drop the jobs not started (a term ended: the next leader redoes them from the annotations)."""
        self._jobs.clear()
        self._count = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for i in range(WRITERS):
                tg.create_task(self._writer(), name=f"gpu-state-writer-{i}")

    async def _writer(self) -> None:
        while True:
            node = await self._queue.get()
            while jobs := self._jobs.get(node):
                try:
                    await self._process(jobs[0])
                except Exception:  # a bug here must cost this write, not the process
                    log.exception("GPU state write failed unexpectedly", node=node)
                if self._jobs.get(node) is jobs:  # not cleared meanwhile
                    jobs.popleft()
                    self._count -= 1
                    if not jobs:
                        del self._jobs[node]

    async def _process(self, job: Job) -> None:
        for change in job.changes:
            name = event_name(job.node, job.prev, change)
            body = event_body(
                name, change, node=job.node, node_uid=job.node_uid, instance=self._instance, token=job.token
            )
            claiming = functools.partial(claim, self._events, body)
            if await self._retrying("event", job.node, claiming, default=True):
                job.report(change)
            else:
                log.info("GPU change already reported", node=job.node, event_name=name, change=change.kind)
        if fits(job.new):
            storing = functools.partial(self._store, job.node, job.new)
            held = await self._retrying("annotation", job.node, storing, default=None)
            if held is not None:
                job.stored(job.node, held)

    async def _retrying(
        self, operation: str, node: str, attempt: Callable[[], Awaitable[Any]], default: Any
    ) -> Any:
        """``attempt()``, retried while transient; ``default`` once it gives up (counted and logged)."""
        backoff = Backoff(base=1.0, cap=30.0)
        for n in range(1, ATTEMPTS + 1):
            try:
                return await attempt()
            except ApiError as e:
                last = n == ATTEMPTS or not e.transient
                self._metrics.gpu_change_errors.labels(operation).inc()
                (log.error if last else log.warning)(
                    f"GPU change {operation} not written", node=node, error=str(e), retrying=not last
                )
                if last:
                    return default
                await asyncio.sleep(backoff.next_delay())
        return default

    async def _store(self, node: str, new: NodeGpus) -> str | None:
        """Write ``new`` unless the node holds a newer state; the value it holds now (None: node gone)."""
        value = encode(new)
        for _ in range(ATTEMPTS):  # a 409: the node changed between read and patch; read it again
            obj = await call(self._core.read_node, node, what=f"read node {node}", absent=(404,))
            if obj is None:
                return None  # the node is gone, and its state with it
            meta = obj.get("metadata") or {}
            current = (meta.get("annotations") or {}).get(ANNOTATION)
            found = decode(current) if current else None
            if found is not None and found.seq >= new.seq:
                if current != value:
                    log.info("newer GPU state on the node, left as it is", node=node, found=found.seq)
                return current or ""
            patch = {
                "metadata": {
                    "resourceVersion": meta.get("resourceVersion"),
                    "annotations": {ANNOTATION: value},
                }
            }
            done = await call(
                self._core.patch_node,
                node,
                patch,
                what=f"patch GPU state of node {node}",
                absent=(409,),
                _content_type=MERGE_PATCH,
            )
            if done is not None:
                return value
        raise ApiError(f"patch GPU state of node {node}: conflicts {ATTEMPTS} times in a row", transient=True)
