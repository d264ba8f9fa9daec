"""S3 exporter: one object per batch, laid out for Athena/Glue/Snowflake.

Key: ``<prefix>/cluster=<cluster>/<partition>/<time>-<digest>.<ext>`` where the
partition (default ``year=/month=/day=/hour=``) and time come from the oldest
``observed_at`` in the batch, and the digest is a SHA-256 of the body. Keys
are therefore content-addressed: two different batches never share a key,
whatever the replica, restart or millisecond, and a retried batch overwrites
its own object instead of adding a duplicate. Works with any S3-compatible
store through ``S3_ENDPOINT_URL``; credentials come from the AWS chain.
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

import aioboto3
import botocore.exceptions  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from gpuid import __version__
from gpuid.config import Settings
from gpuid.errors import ExportError
from gpuid.exporters.settings import S3Settings, env_of
from gpuid.records import FIELD_NAMES, SCHEMA_VERSION, GPUReading

CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}
_HINTS = {
    "NoSuchBucket": "check S3_BUCKET (and S3_REGION / S3_ENDPOINT_URL)",
    "AccessDenied": "the credentials may not write to this bucket (s3:PutObject)",
    "InvalidAccessKeyId": "check the AWS credentials",
    "SignatureDoesNotMatch": "check the AWS credentials",
}


def encode_csv(batch: Sequence[GPUReading]) -> bytes:
    """Header row, then one row per record in ``FIELD_NAMES`` order; mig_devices as JSON, null as empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELD_NAMES)
    for r in batch:
        d = r.to_dict()
        d["mig_devices"] = json.dumps(d["mig_devices"], separators=(",", ":"))
        writer.writerow(["" if d[name] is None else d[name] for name in FIELD_NAMES])
    return out.getvalue().encode()


def encode_jsonl(batch: Sequence[GPUReading]) -> bytes:
    return "".join(r.to_json() + "\n" for r in batch).encode()


def s3_error(e: Exception, bucket: str) -> ExportError:
    """Wrap a botocore failure: throttling, 5xx and connection trouble are transient."""
    if isinstance(e, botocore.exceptions.ClientError):
        error = e.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        transient = status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES
        hint = _HINTS.get(code) or ("bucket not found" if code == "404" else "")
        message = f"s3 bucket {bucket!r}: {code or status} {error.get('Message', '')}".rstrip()
        return ExportError(message + (f"; {hint}" if hint else ""), transient=transient)
    if isinstance(e, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return ExportError(
            f"s3: {e}; set up the AWS credential chain (env, IRSA, instance profile)", transient=False
        )
    # Endpoint unreachable, connection reset, timeouts, and anything else from the transport.
    return ExportError(f"s3 bucket {bucket!r}: {type(e).__name__}: {e}", transient=True)


class S3Exporter:
    name = "s3"

    def __init__(self, config: S3Settings, cluster: str) -> None:
        self.config = config
        self.cluster = cluster
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Exporter:
        return cls(S3Settings.from_env(env_of(settings)), settings.cluster_name)

    async def open(self) -> None:
        cfg = self.config
        boto_config = Config(
            connect_timeout=cfg.timeout,
            read_timeout=cfg.timeout,
            retries={"mode": "standard", "max_attempts": 2},  # delivery does the patient retrying
            s3={"addressing_style": "path" if cfg.force_path_style else "auto"},
        )
        session = aioboto3.Session()
        client = session.client(
            "s3", region_name=cfg.region, endpoint_url=cfg.endpoint_url, config=boto_config
        )
        self._client = await self._stack.enter_async_context(client)
        try:
            await self._client.head_bucket(Bucket=cfg.bucket)
        except botocore.exceptions.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("403", "AccessDenied"):
                return  # a PutObject-only role may not HeadBucket: find out on the first write
            await self.close()
            raise s3_error(e, cfg.bucket) from None
        except Exception as e:
            await self.close()
            raise s3_error(e, cfg.bucket) from None

    def object_key(self, batch: Sequence[GPUReading], body: bytes) -> str:
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

    def put_args(self, batch: Sequence[GPUReading]) -> dict[str, Any]:
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
        if cfg.sse:
            args["ServerSideEncryption"] = cfg.sse
            if cfg.sse_kms_key_id:
                args["SSEKMSKeyId"] = cfg.sse_kms_key_id
        return args

    async def export(self, batch: Sequence[GPUReading]) -> None:
        if self._client is None:
            raise ExportError("s3: not connected", transient=True)
        if not batch:
            return
        try:
            args = self.put_args(batch)
        except ValueError as e:  # a record whose observed_at is not RFC 3339: retrying cannot help
            raise ExportError(f"s3: cannot name the object: {e}", transient=False) from e
        try:
            await self._client.put_object(**args)
        except Exception as e:
            raise s3_error(e, self.config.bucket) from None

    async def health(self) -> bool:
        if self._client is None:
            return False
        try:
            await self._client.head_bucket(Bucket=self.config.bucket)
        except botocore.exceptions.ClientError as e:
            return str(e.response.get("Error", {}).get("Code", "")) in ("403", "AccessDenied")
        except Exception:  # health answers a question, it does not report
            return False
        return True

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()
