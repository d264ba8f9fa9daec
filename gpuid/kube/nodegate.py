"""One conversation with a node's GPUs at a time: scans and bug reports take turns per node.

``nvidia-smi -q`` takes the driver's locks and can run for seconds on large
systems; ``nvidia-bug-report.sh`` runs it and much more for minutes. Two of
them at once on one node only slow each other down and double the load on
that kubelet. A scan (device-plugin pod, its ``-L``, the ``SCAN_SOURCE=auto``
fallback to the driver pod) and a bug-report collection each hold their
node's turn for their whole duration, so a node never has two gpuid execs
running, whichever pods they go to. Every holder has a deadline of its own
(``TIMEOUT``, ``BUG_REPORT_TIMEOUT``), so every wait here is bounded; entries
exist only while a node is held or awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class NodeExecGate:
    """Per-node turns: ``async with gate.hold(node)`` waits until nobody else holds ``node``."""

    def __init__(self) -> None:
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}  # node -> (lock, holders + waiters)

    @contextlib.asynccontextmanager
    async def hold(self, node: str) -> AsyncIterator[None]:
        lock, users = self._turns.get(node) or (asyncio.Lock(), 0)
        self._turns[node] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[node]
            if users == 1:
                del self._turns[node]
            else:
                self._turns[node] = (lock, users - 1)

    def busy(self, node: str) -> bool:
        """Whether someone holds ``node`` now."""
        turn = self._turns.get(node)
        return turn is not None and turn[0].locked()

    @property
    def active(self) -> int:
        """Nodes held or awaited right now."""
        return len(self._turns)
