"""S3 exporter: one object per batch, laid out for Athena/Glue/Snowflake.

Key: ``<prefix>/cluster=<cluster>/<partition>/<time>-<digest>.<ext>`` where the
partition (default ``year=/month=/day=/hour=``) and time come from the oldest
``observed_at`` in the batch, and the digest is a SHA-256 of the body. Keys
are therefore content-addressed: two different batches never share a key,
whatever the replica, restart or millisecond, and a retried batch overwrites
its own object instead of adding a duplicate. Works with any S3-compatible
store through ``S3_ENDPOINT_URL``; credentials come from the AWS chain.
Every call is bounded by ``S3_TIMEOUT``; failures are classed by
``gpuid.exporters.s3client.s3_error``. ``gpu_changed`` records go into jsonl
objects with their ``"event"`` field; CSV objects hold readings only (one
header, one schema), so changes are left out of them: read them from jsonl,
stdout or http.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gpuid import __version__
from gpuid.errors import ExportError, LaneError, RecordError
from gpuid.exporters import ExporterSettings
from gpuid.exporters.s3client import S3Settings, error_code, open_client, s3_call, s3_error
from gpuid.records import FIELD_NAMES, SCHEMA_VERSION, GPUReading, Record, record_json

CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


def encode_csv(batch: Sequence[Record]) -> bytes:
    """Header row, then one row per reading in ``FIELD_NAMES`` order; mig_devices as JSON, null as empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELD_NAMES)
    for r in batch:
        if not isinstance(r, GPUReading):
            continue  # gpu_changed has other columns: CSV objects carry readings only
        d = r.to_dict()
        d["mig_devices"] = json.dumps(d["mig_devices"], separators=(",", ":"))
        writer.writerow(["" if d[name] is None else d[name] for name in FIELD_NAMES])
    return out.getvalue().encode()


def encode_jsonl(batch: Sequence[Record]) -> bytes:
    return "".join(record_json(r) + "\n" for r in batch).encode()


class S3Exporter:
    name = "s3"

    def __init__(self, config: S3Settings, cluster: str) -> None:
        self.config = config
        self.cluster = cluster
        self.timeout = config.timeout  # each call is bounded by it (``s3_call``)
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: ExporterSettings) -> S3Exporter:
        assert settings.s3 is not None  # parsed whenever s3 is selected
        return cls(settings.s3, settings.cluster)

    async def open(self) -> None:
        cfg = self.config
        try:
            # botocore retries twice at most: delivery does the patient retrying
            self._client = await open_client(cfg, self._stack, attempts=2)
            await self._head_bucket()
        except Exception as e:
            await self.close()
            raise s3_error(e, cfg.bucket) from None

    async def _head_bucket(self) -> None:
        """Check that the bucket is there; a PutObject-only role may not HeadBucket: a 403 passes."""
        try:
            await s3_call(self.config, self._client.head_bucket(Bucket=self.config.bucket))
        except LaneError as e:
            if error_code(e.__cause__) not in ("403", "AccessDenied"):
                raise

    def object_key(self, batch: Sequence[Record], body: bytes) -> str:
        oldest = min(datetime.fromisoformat(r.observed_at) for r in batch).astimezone(UTC)
        digest = hashlib.sha256(body).hexdigest()[:32]
        ext = self.config.format + (".gz" if self.config.compress == "gzip" else "")
        parts = [
            self.config.prefix,
            f"cluster={self.cluster}",
            oldest.strftime(self.config.partition_pattern),
            f"{oldest.strftime('%Y%m%dT%H%M%S')}{oldest.microsecond // 1000:03d}Z-{digest}.{ext}",
        ]
        return "/".join(p for p in parts if p)

    def put_args(self, batch: Sequence[Record]) -> dict[str, Any]:
        """Everything ``put_object`` needs for ``batch``: key, body, type, metadata, encryption."""
        cfg = self.config
        body = encode_csv(batch) if cfg.format == "csv" else encode_jsonl(batch)
        args: dict[str, Any] = {
            "Bucket": cfg.bucket,
            "Key": self.object_key(batch, body),
            "ContentType": CONTENT_TYPES[cfg.format],
            "Metadata": {
                "record-count": str(len(batch)),
                "schema-version": str(SCHEMA_VERSION),
                "gpuid-version": __version__,
            },
        }
        if cfg.compress == "gzip":
            body = gzip.compress(body, mtime=0)
            args["ContentEncoding"] = "gzip"
        args["Body"] = body
        args.update(cfg.encryption())
        return args

    async def export(self, batch: Sequence[Record]) -> None:
        if self._client is None:
            raise ExportError("s3: not connected")
        if self.config.format == "csv":
            batch = [r for r in batch if isinstance(r, GPUReading)]
        if not batch:
            return
        try:
            args = self.put_args(batch)
        except ValueError as e:  # a record whose observed_at is not RFC 3339: delivery finds which
            raise RecordError(f"s3: cannot name the object: {e}") from e
        await s3_call(self.config, self._client.put_object(**args))

    async def health(self) -> bool:
        if self._client is None:
            return False
        try:
            await self._head_bucket()
        except ExportError:  # health answers a question, it does not report
            return False
        return True

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()
