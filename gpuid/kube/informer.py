"""List-then-watch of raw Kubernetes objects, resilient to everything the API server does.

gpuid reads the watch stream itself (``_preload_content=False``) instead of
through ``kubernetes_asyncio.watch``: the library turns every event into a
full ``V1Pod`` model, costly at fleet scale, and hides 410s behind a retry with
a stale resourceVersion. Here each event line is decoded once with ``json``
and handed on as a dict. The loop lists, watches from the list's
resourceVersion with bookmarks, re-lists on 410, and reconnects with capped
backoff on disconnects, 5xx and 429. A re-list diffs against what is known,
so an object added or deleted while disconnected is never missed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog

from gpuid.errors import ApiError, ExpiredError
from gpuid.kube.api import open_stream, status_error
from gpuid.metrics import Metrics
from gpuid.retry import Backoff

log = structlog.get_logger("gpuid.watch")

Obj = dict[str, Any]
ListFn = Callable[..., Awaitable[Any]]
Slim = Callable[[Obj], Any]
Handler = Callable[[str, Any], None]
WATCH_SECONDS = 300
LIST_READ_TIMEOUT = 60.0  # a list answer that stalls this long is a dead connection: reconnect


class Informer:
    """Keeps ``on_event`` told of every object matching a list call, forever."""

    def __init__(
        self,
        kind: str,
        list_fn: ListFn,
        slim: Slim,
        on_event: Handler,
        metrics: Metrics,
        *,
        backoff: Backoff | None = None,
        **list_kwargs: Any,
    ) -> None:
        self.kind = kind
        self._list_fn = list_fn
        self._slim = slim
        self._on_event = on_event
        self._metrics = metrics
        self._kwargs = {k: v for k, v in list_kwargs.items() if v}
        self._backoff = backoff or Backoff(base=0.5, cap=30.0)
        self._known: dict[str, Any] = {}  # uid -> slim object: only what gpuid needs stays in memory
        self.synced = asyncio.Event()

    async def run(self) -> None:
        rv: str | None = None
        barren = 0  # watches in a row that ended (cleanly or with 410) before delivering anything
        while True:
            try:
                if rv is None:
                    rv = await self._relist()
                    self._backoff.reset()  # the API server answered in full: it is healthy
                rv, delivered = await self._watch(rv)
                barren = 0 if delivered else barren + 1
            except ExpiredError:
                self._metrics.watch_restarts.labels("expired").inc()
                log.info("watch expired, re-listing", kind=self.kind)
                rv, barren = None, barren + 1
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                if isinstance(e, ApiError) and not e.transient:
                    log.error("watch failed with a permanent error", kind=self.kind, error=str(e))
                    raise
                self._metrics.watch_restarts.labels("error").inc()
                delay = self._backoff.next_delay()
                log.warning(
                    "watch interrupted, reconnecting", kind=self.kind, error=str(e), retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)
                continue
            if barren > 1:  # nothing again: a draining server or a proxy closing at once; do not spin
                self._metrics.watch_restarts.labels("error").inc()
                await asyncio.sleep(self._backoff.next_delay())

    async def _request(self, timeout: aiohttp.ClientTimeout, **extra: Any) -> aiohttp.ClientResponse:
        what = f"{self.kind} {'watch' if extra.get('watch') else 'list'}"
        resp: aiohttp.ClientResponse = await open_stream(
            self._list_fn, what=what, timeout=timeout, **self._kwargs, **extra
        )
        return resp

    async def _relist(self) -> str:
        # Without a timeout of its own the client waits forever on a connection that went dark.
        resp = await self._request(aiohttp.ClientTimeout(sock_connect=10, sock_read=LIST_READ_TIMEOUT))
        async with resp:
            payload = json.loads(await resp.read())
        seen: dict[str, Any] = {}
        for obj in payload.get("items") or ():
            uid = obj["metadata"]["uid"]
            seen[uid] = item = self._slim(obj)
            self._on_event("ADDED" if uid not in self._known else "MODIFIED", item)
        for uid in self._known.keys() - seen.keys():
            self._on_event("DELETED", self._known[uid])
        self._known = seen
        self.synced.set()
        return str(payload["metadata"]["resourceVersion"])

    async def _watch(self, rv: str) -> tuple[str, bool]:
        """Follow the watch from ``rv``; the last resourceVersion seen and whether anything came."""
        resp = await self._request(
            aiohttp.ClientTimeout(sock_connect=10, sock_read=WATCH_SECONDS + 30),
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
        )
        delivered = False
        async with resp:
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                rv = self._dispatch(event, rv)
                if not delivered:  # a watch that delivers is healthy: its breaking is a new incident
                    delivered = True
                    self._backoff.reset()
        return rv, delivered

    def _dispatch(self, event: Obj, rv: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            message = str(obj.get("message", "")).encode()
            raise status_error(int(obj.get("code") or 500), message, f"{self.kind} watch")
        meta = obj.get("metadata") or {}
        new_rv = str(meta.get("resourceVersion") or rv)
        if kind == "BOOKMARK":
            return new_rv
        uid = meta.get("uid")
        if kind not in ("ADDED", "MODIFIED", "DELETED") or not uid:
            log.warning("ignoring unexpected watch event", kind=self.kind, type=kind)
            return new_rv
        item = self._slim(obj)
        if kind == "DELETED":
            self._known.pop(uid, None)
        else:
            self._known[uid] = item
        self._on_event(str(kind), item)
        return new_rv
