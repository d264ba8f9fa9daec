"""List-then-watch of raw Kubernetes objects, resilient to everything the API server does.

gpuid reads the watch stream itself (``_preload_content=False``): the
library's ``watch`` builds a full ``V1Pod`` per event, costly at fleet scale,
and hides 410s behind a retry with a stale resourceVersion. Each event line is
decoded once with ``json`` and handed on as a dict. The loop lists, watches
with bookmarks, re-lists on 410 (diffing, so nothing added or deleted
meanwhile is missed), and reconnects with capped backoff on disconnects, 5xx
and 429 (at least its ``Retry-After``).

Lists are paginated (``limit``/``continue``): a page that fails or stalls is
asked for again with the same token, so a huge cluster's list makes progress;
only an expired token (410) starts it over. Decoding is total (``shapes``): a
wrong-shape event is skipped, a list asked for again, each logged once per
kind. A 401/403 ends the watch unless the owner retries it (``permanent_retry``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from gpuid.errors import ApiError, ExpiredError
from gpuid.kube.api import open_stream, pause, status_error
from gpuid.kube.shapes import MalformedError, Page, decode_page, uid_of
from gpuid.metrics import Metrics
from gpuid.retry import Backoff

log = structlog.get_logger("gpuid.watch")

Obj = dict[str, Any]
ListFn = Callable[..., Awaitable[Any]]
Slim = Callable[[Obj], Any]
Handler = Callable[[str, Any], None]
WATCH_SECONDS = 300
LIST_PAGE = 500  # objects per list page: client-go's pager default
LIST_READ_TIMEOUT = 60.0  # a page that stalls this long is a dead connection: ask for it again


@dataclass
class _Listing:
    """A list in progress: what its pages held so far, and where the next page starts."""

    seen: dict[str, Any] = field(default_factory=dict)
    token: str = ""
    rv: str = ""


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
        permanent_retry: float | None = None,
        **list_kwargs: Any,
    ) -> None:
        self.kind = kind
        self._list_fn = list_fn
        self._slim = slim
        self._on_event = on_event
        self._metrics = metrics
        self._kwargs = {k: v for k, v in list_kwargs.items() if v}
        self._backoff = backoff or Backoff(base=0.5, cap=30.0)
        self._permanent_retry = permanent_retry  # None: a 401/403 ends the watch (and gpuid)
        self._known: dict[str, Any] = {}  # uid -> slim object: only what gpuid needs stays in memory
        self._listing: _Listing | None = None
        self._reported: set[str] = set()
        self.denied = False  # refused with a permanent error; retrying every ``permanent_retry``
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
                rv, barren, self._listing = None, barren + 1, None
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                if isinstance(e, ApiError) and not e.transient:
                    await self._refused(e)
                    rv = None
                    continue
                self._metrics.watch_restarts.labels("error").inc()
                advice = e.retry_after if isinstance(e, ApiError) else None  # a 429 says when to return
                delay = max(self._backoff.next_delay(), 0 if advice is None else pause(advice))
                log.warning(
                    "watch interrupted, reconnecting", kind=self.kind, error=str(e), retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)
                continue
            if barren > 1:  # nothing again: a draining server or a proxy closing at once; do not spin
                self._metrics.watch_restarts.labels("error").inc()
                await asyncio.sleep(self._backoff.next_delay())

    async def _refused(self, error: ApiError) -> None:
        """A permanent error: raise it, or (``permanent_retry``) count it and try again much later."""
        if self._permanent_retry is None:
            log.error("watch failed with a permanent error", kind=self.kind, error=str(error))
            raise error
        self.denied = True
        self.synced.set()  # waiters go on without this watch's objects
        self._listing = None
        self._metrics.watch_restarts.labels("denied").inc()
        log.error(
            "watch refused; retrying later",
            kind=self.kind,
            status=error.status,
            error=str(error),
            retry_in=self._permanent_retry,
        )
        await asyncio.sleep(self._permanent_retry)

    def _problem(self, problem: str, **fields: Any) -> None:
        """Log a malformed answer once per kind of problem (a broken server repeats itself)."""
        if problem not in self._reported:
            self._reported.add(problem)
            log.warning("malformed answer from the API server", kind=self.kind, problem=problem, **fields)

    async def _request(self, timeout: aiohttp.ClientTimeout, **extra: Any) -> aiohttp.ClientResponse:
        what = f"{self.kind} {'watch' if extra.get('watch') else 'list'}"
        resp: aiohttp.ClientResponse = await open_stream(
            self._list_fn, what=what, timeout=timeout, **self._kwargs, **extra
        )
        return resp

    async def _relist(self) -> str:
        """List every object, page by page, resuming a list an error interrupted; its resourceVersion."""
        listing = self._listing = self._listing or _Listing()
        while True:
            page = await self._page(listing.token)
            listing.rv = listing.rv or page.rv  # every page of one list is one snapshot
            for uid, obj in page.items:
                listing.seen[uid] = item = self._read(obj)
                if item is not None:
                    self._on_event("ADDED" if uid not in self._known else "MODIFIED", item)
                    self._known[uid] = item
            if not page.token:
                break
            listing.token = page.token
        for uid in self._known.keys() - listing.seen.keys():
            self._on_event("DELETED", self._known.pop(uid))
        self._listing = None
        if self.denied:
            log.info("watch allowed again", kind=self.kind)
            self.denied = False
        self.synced.set()
        return listing.rv

    async def _page(self, token: str) -> Page:
        # Without a timeout of its own the client waits forever on a connection that went dark.
        timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=LIST_READ_TIMEOUT)
        extra: dict[str, Any] = {"limit": LIST_PAGE} | ({"_continue": token} if token else {})
        resp = await self._request(timeout, **extra)
        async with resp:
            payload = json.loads(await resp.read())
        return self._decode_page(payload)

    def _decode_page(self, payload: object) -> Page:
        try:
            page = decode_page(payload)
        except MalformedError as e:
            self._problem(e.problem)
            raise ApiError(f"{self.kind} list: {e.problem}", transient=True) from None
        if page.skipped:
            self._problem("list item without metadata.uid")
        return page

    def _read(self, obj: Obj) -> Any:
        """``slim(obj)``, or None when even the total reader fails (logged)."""
        try:
            return self._slim(obj)
        except (TypeError, ValueError, AttributeError, KeyError) as e:
            self._problem("object gpuid cannot read", error=f"{type(e).__name__}: {e}")
            return None

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
                rv = self._dispatch(json.loads(line), rv)  # a line that is not JSON: reconnect
                if not delivered:  # a watch that delivers is healthy: its breaking is a new incident
                    delivered = True
                    self._backoff.reset()
        return rv, delivered

    def _dispatch(self, event: object, rv: str) -> str:
        """Apply one watch event; the resourceVersion to resume from. Wrong shapes are skipped."""
        if not isinstance(event, dict):
            self._problem("watch event is not an object")
            return rv
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            self._problem("watch event object is not an object", type=str(kind)[:20])
            return rv
        if kind == "ERROR":
            code = obj.get("code")
            message = str(obj.get("message", "")).encode()
            status = code if isinstance(code, int) and 100 <= code <= 599 else 500
            raise status_error(status, message, f"{self.kind} watch")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            self._problem("watch event without metadata", type=str(kind)[:20])
            return rv
        new_rv = meta.get("resourceVersion")
        new_rv = new_rv if isinstance(new_rv, str) and new_rv else rv
        if kind == "BOOKMARK":
            return new_rv
        uid = uid_of(obj)
        if kind not in ("ADDED", "MODIFIED", "DELETED") or uid is None:
            self._problem("unexpected watch event", type=str(kind)[:20])
            return new_rv
        item = self._read(obj)
        if item is None:
            return new_rv
        if kind == "DELETED":
            self._known.pop(uid, None)
        else:
            self._known[uid] = item
        self._on_event(str(kind), item)
        return new_rv
