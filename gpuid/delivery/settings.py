"""Settings of delivery: batches, queues, retries and the spool, shared by every exporter lane.

Parsed once at start-up by ``gpuid.config`` through ``Env``; every field has
a default and the reason for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpuid.errors import ConfigError
from gpuid.options import DAY, HOUR, KIB, Env

TIB = 1024**4


@dataclass(frozen=True)
class DeliverySettings:
    batch_size: int = 500  # one COPY / one object per batch; bigger batches amortise round trips
    flush_interval: float = 0.0  # 0: send when the exporter is idle; what queues meanwhile is the next batch
    queue_size: int = 10_000  # per exporter, in memory; the spool takes over beyond it
    retry_max_backoff: float = 30.0  # a backend that comes back is noticed within this (parked: twice)
    spool_dir: Path | None = None  # off by default: a DaemonSet needs a volume for it
    spool_max_bytes: int = 256 * 1024 * 1024  # bounded, so a long outage cannot fill the node's disk

    @classmethod
    def from_env(cls, env: Env) -> DeliverySettings:
        batch = env.int("EXPORT_BATCH_SIZE", minimum=1, maximum=100_000)
        queue = env.int("EXPORT_QUEUE_SIZE", minimum=1, maximum=1_000_000)  # ~1 KiB a record, in memory
        if queue < batch:
            raise ConfigError(f"EXPORT_QUEUE_SIZE={queue} is invalid: must be >= EXPORT_BATCH_SIZE ({batch})")
        spool = env.str("SPOOL_DIR")
        return cls(
            batch_size=batch,
            flush_interval=env.duration("EXPORT_FLUSH_INTERVAL", minimum=0.0, maximum=HOUR),
            queue_size=queue,
            retry_max_backoff=env.duration("EXPORT_RETRY_MAX_BACKOFF", minimum=0.1, maximum=DAY),
            spool_dir=Path(spool) if spool else None,
            spool_max_bytes=env.int("SPOOL_MAX_BYTES", minimum=64 * KIB, maximum=TIB),
        )
