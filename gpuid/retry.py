"""How long to wait before trying again: the one backoff schedule every retry loop uses.

The watch, pod scans, exports, node labels and bug-report polls all retry
with the same shape: exponential growth from ``base``, capped at ``cap``, with
*equal jitter* (a delay drawn uniformly from the upper half of the current
step), so replicas that failed together do not retry together, and a delay
never collapses to zero.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays of ``base * 2**n`` capped at ``cap``, each drawn from [step/2, step] (equal jitter)."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        step = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return random.uniform(step / 2, step)  # noqa: S311 - jitter, not crypto

    def reset(self) -> None:
        self.attempt = 0
