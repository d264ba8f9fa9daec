"""Capped exponential backoff with full jitter, shared by every retry loop.

Used by the watch (reconnects), the scanner (failing pods) and delivery
(backends that are down), so they all back off the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays of ``base * 2**n`` capped at ``cap``, drawn uniformly from [cap/2, cap]-style jitter."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto

    def reset(self) -> None:
        self.attempt = 0
