"""Lists and watch streams: the paged lists gpuid starts from, the chunked responses its watch lives on.

A watch is an HTTP 200 whose body is one JSON event per line, flushed as it
happens. This module replays history after the requested resourceVersion
(or synthesises ADDED for every current object when there is none), then
follows live changes, with periodic BOOKMARKs and the server-side
``timeoutSeconds``. Selectors are applied per event against the object's
old and new state, so a pod that stops matching is reported as DELETED and
one that starts matching as ADDED, as the real watch cache does. A history
gap (compaction) is reported the real way: an ``ERROR`` line carrying a 410
Status inside the 200 stream, then end of stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

from gpuid.sim import wire
from gpuid.sim.cluster import SimCluster
from gpuid.sim.events import WatchEvent
from gpuid.sim.filters import ObjectFilter

WRITE_BATCH_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class WatchRequest:
    resource: str
    flt: ObjectFilter
    resource_version: int | None  # None: start with the current state ("" or "0")
    bookmarks: bool
    timeout: float | None
    send_initial_events: bool

    @classmethod
    def from_query(
        cls, resource: str, flt: ObjectFilter, query: Mapping[str, str], *, rv: int, timeout: float | None
    ) -> WatchRequest:
        send_initial = wire.truthy(query.get("sendInitialEvents"))
        return cls(
            resource=resource,
            flt=flt,
            resource_version=None if rv == 0 or send_initial else rv,
            bookmarks=wire.truthy(query.get("allowWatchBookmarks")),
            timeout=timeout,
            send_initial_events=send_initial,
        )


def event_line(event: WatchEvent, resource: str, flt: ObjectFilter) -> bytes | None:
    """What one watcher sees of ``event``: its line, a selector-driven ADDED/DELETED, or nothing."""
    if event.resource != resource:
        return None
    if flt.key:
        return event.view(flt.key, lambda: _selected_line(event, flt))
    return _selected_line(event, flt)


def _selected_line(event: WatchEvent, flt: ObjectFilter) -> bytes | None:
    matches = flt.matches(event.obj)
    if event.type != "MODIFIED" or event.prev is None:
        return event.line() if matches else None
    matched = flt.matches(event.prev)
    if matches:
        return event.line() if matched else event.line("ADDED")
    return event.left_selection_line() if matched else None


async def _write_lines(resp: web.StreamResponse, lines: Iterable[bytes]) -> None:
    """Write lines, batching only what is already pending, so every event is flushed at once."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        batch.append(line)
        size += len(line)
        if size >= WRITE_BATCH_BYTES:
            await resp.write(b"".join(batch))
            batch, size = [], 0
    if batch:
        await resp.write(b"".join(batch))


async def serve_watch(
    request: web.Request,
    cluster: SimCluster,
    watch: WatchRequest,
    *,
    bookmark_interval: float,
    is_closing: Callable[[], bool],
) -> web.StreamResponse:
    log = cluster.log
    epoch = cluster.watch_epoch
    initial: list[bytes] = []
    if watch.resource_version is None:
        initial = [ev.line("ADDED") for ev in cluster.select(watch.resource, watch.flt)]
        cursor = log.head
    else:
        cursor = watch.resource_version
    resp = web.StreamResponse(status=200, headers={"Content-Type": wire.JSON})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        await _write_lines(resp, initial)
        if watch.send_initial_events and watch.bookmarks:
            await resp.write(wire.bookmark_line(watch.resource, cursor))
        await _follow(
            resp,
            cluster,
            watch,
            cursor=cursor,
            epoch=epoch,
            bookmark_interval=bookmark_interval,
            is_closing=is_closing,
        )
        if cluster.watch_epoch != epoch and cluster.watch_drop_reset and request.transport is not None:
            request.transport.abort()  # drop_watches(reset=True): no terminating chunk
            return resp
        await resp.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing to tell anyone
    return resp


async def _follow(
    resp: web.StreamResponse,
    cluster: SimCluster,
    watch: WatchRequest,
    *,
    cursor: int,
    epoch: int,
    bookmark_interval: float,
    is_closing: Callable[[], bool],
) -> None:
    """Stream live events from ``cursor`` until timeout, drop, server stop or a history gap."""
    log = cluster.log
    loop = asyncio.get_running_loop()
    deadline = None if watch.timeout is None else loop.time() + watch.timeout
    next_bookmark = loop.time() + bookmark_interval
    while not is_closing() and cluster.watch_epoch == epoch:
        events = log.since(cursor)
        if events is None:
            message = wire.too_old_message(cursor, log.floor)
            await resp.write(wire.error_line(410, message, "Expired"))
            return
        if events:
            cursor = events[-1].rv
            lines = (line for ev in events if (line := event_line(ev, watch.resource, watch.flt)))
            await _write_lines(resp, lines)
        now = loop.time()
        if watch.bookmarks and now >= next_bookmark:
            await resp.write(wire.bookmark_line(watch.resource, cursor))
            next_bookmark = now + bookmark_interval
        if deadline is not None and now >= deadline:
            return
        if log.head > cursor:
            continue  # more arrived while we were writing
        timers = [t for t in (deadline, next_bookmark if watch.bookmarks else None) if t is not None]
        changed = log.changed()
        try:
            await asyncio.wait([changed], timeout=max(0.0, min(timers) - now) if timers else None)
        finally:
            log.forget(changed)


def list_page(
    cluster: SimCluster,
    resource: str,
    flt: ObjectFilter,
    *,
    match: str | None,
    rv: int,
    limit: int,
    token: str | None,
) -> web.Response:
    """One page of a list (``limit``/``continue``), at the current or an ``Exact`` resourceVersion."""
    floor, head = cluster.log.floor, cluster.resource_version
    list_rv, after = head, None
    if token:
        try:
            list_rv, after = wire.decode_continue(token)
        except ValueError as e:
            return wire.status_response(400, str(e))
        if list_rv < floor:
            return wire.status_response(410, wire.CONTINUE_EXPIRED, "Expired")
    elif match == "Exact" and rv:
        if rv < floor:
            return wire.status_response(410, wire.too_old_message(rv, floor), "Expired")
        if rv != head:
            message = "gpuid.sim serves Exact lists only at the current resourceVersion"
            return wire.status_response(500, message)
    items = cluster.select(resource, flt, after)
    next_token = None
    if 0 < limit < len(items):
        items = items[:limit]
        meta = items[-1].obj["metadata"]
        next_token = wire.encode_continue(list_rv, (meta.get("namespace", ""), meta["name"]))
    return web.Response(body=wire.list_body(resource, list_rv, items, next_token), content_type=wire.JSON)
