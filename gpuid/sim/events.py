"""The simulated etcd history: one event per resourceVersion, serialised once.

Watches resume from a resourceVersion, so the sim keeps every change since
the last compaction in order, and answers "what happened after rv N?" with a
slice (each mutation takes exactly one rv, so rv → index is arithmetic). An
rv older than the retained window is "too old" and gets the 410 the real API
server sends. Each event renders its JSON lazily and at most once per event
type, and every watcher shares those bytes: a benchmark with thousands of
pods and many watchers pays for serialisation once per change.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


def dump(obj: Any) -> bytes:
    """Compact JSON bytes, the way the API server writes them."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def clone(obj: Obj) -> Obj:
    """Deep copy of a JSON-like object; several times faster than ``copy.deepcopy`` (no memo)."""
    return {k: _clone_value(v) for k, v in obj.items()}


def _clone_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clone_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone_value(v) for v in value]
    return value


@dataclass(slots=True, eq=False)
class WatchEvent:
    """One change to one object: ``obj`` is the state after it (before, for DELETED)."""

    rv: int
    type: str  # ADDED, MODIFIED or DELETED
    resource: str  # "pods", "nodes", … (the plural, as in the URL)
    obj: Obj
    prev: Obj | None = None
    _obj_json: bytes | None = field(default=None, repr=False)
    _lines: dict[str, bytes] = field(default_factory=dict, repr=False)
    _views: dict[str, bytes | None] = field(default_factory=dict, repr=False)

    def object_json(self) -> bytes:
        if self._obj_json is None:
            self._obj_json = dump(self.obj)
        return self._obj_json

    def line(self, type_: str | None = None) -> bytes:
        """The watch line for this event, sent as ``type_`` (default: its own type)."""
        type_ = type_ or self.type
        cached = self._lines.get(type_)
        if cached is None:
            cached = b'{"type":"' + type_.encode() + b'","object":' + self.object_json() + b"}\n"
            self._lines[type_] = cached
        return cached

    def view(self, selection: str, render: Callable[[], bytes | None]) -> bytes | None:
        """What watchers of ``selection`` see of this event, rendered once for all of them."""
        try:
            return self._views[selection]
        except KeyError:
            seen = self._views[selection] = render()
            return seen

    def left_selection_line(self) -> bytes:
        """DELETED for a watcher whose selector no longer matches: the old object at the new rv."""
        cached = self._lines.get("left")
        if cached is None:
            old = dict(self.prev or self.obj)
            old["metadata"] = {**old["metadata"], "resourceVersion": str(self.rv)}
            cached = b'{"type":"DELETED","object":' + dump(old) + b"}\n"
            self._lines["left"] = cached
        return cached


class EventLog:
    """Events with rv in ``(floor, head]``, plus wake-ups for watchers waiting on new ones."""

    def __init__(self, *, first_rv: int, max_events: int) -> None:
        if max_events < 1:
            raise ValueError("max_events must be positive")
        self._events: list[WatchEvent] = []
        self._floor = first_rv  # the oldest rv a watch may still resume from
        self._head = first_rv
        self._max_events = max_events
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def head(self) -> int:
        """The newest resourceVersion in the cluster."""
        return self._head

    @property
    def floor(self) -> int:
        """Watches from an rv below this get 410 Expired."""
        return self._floor

    def next_rv(self) -> int:
        return self._head + 1

    def append(self, event: WatchEvent) -> None:
        if event.rv != self._head + 1:
            raise ValueError(f"event rv {event.rv} does not follow {self._head}")
        self._events.append(event)
        self._head = event.rv
        excess = len(self._events) - self._max_events
        # Trim in batches so a full log does not pay an O(n) list shift per event.
        if excess > max(1, self._max_events // 8):
            self._floor = self._events[excess - 1].rv
            del self._events[:excess]
        self.notify()

    def compact(self) -> int:
        """Forget all history, as an etcd compaction does; returns the new floor."""
        self._events.clear()
        self._floor = self._head
        return self._floor

    def since(self, rv: int) -> list[WatchEvent] | None:
        """Events with resourceVersion > ``rv``, or None when ``rv`` is older than the floor."""
        if rv < self._floor:
            return None
        if rv >= self._head:
            return []
        return self._events[rv - self._floor :]

    def changed(self) -> asyncio.Future[None]:
        """A future resolved at the next :meth:`notify`; callers discard it with :meth:`forget`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        return fut

    def forget(self, fut: asyncio.Future[None]) -> None:
        self._waiters.discard(fut)
        if not fut.done():
            fut.cancel()

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
