"""S3 plumbing shared by the S3 exporter and bug-report uploads: settings, client, error classes.

Both write to the same bucket with the same endpoint, region, credentials and
encryption, so they share one settings group (``S3_*``) and one way to open a
client and to read its failures. aioboto3/botocore are imported only when a
client is opened, so parsing settings never needs the optional ``s3`` extra.
Any S3-compatible store works through ``S3_ENDPOINT_URL`` and path-style
addressing; credentials come from the AWS chain (env, IRSA, instance profile).

Every call runs under ``S3_TIMEOUT`` (``s3_call``), and clients never send
``Expect: 100-continue``: botocore waits for the ``100 Continue`` with no
timeout at all, so an endpoint that accepts the connection and stays silent
would hang an upload forever. What a failure costs is decided in ``s3_error``:
throttling, 5xx, timeouts and connection trouble are transient; an object too
large is a record error (delivery halves the batch); everything else the
service refuses — credentials, clock skew, bucket, region, encryption
settings — is a lane error: nothing gpuid puts in a record reaches S3's
checks except the body, so a 4xx is about configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gpuid.errors import ConfigError, ExportError, LaneError, RecordError
from gpuid.options import HOUR, Env

T = TypeVar("T")

_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
}
_RECORD_CODES = {"EntityTooLarge"}  # the body is too big: a smaller batch fits
_CREDENTIALS = "check the AWS credentials"
_HINTS = {
    "NoSuchBucket": "check S3_BUCKET (and S3_REGION / S3_ENDPOINT_URL)",
    "404": "bucket not found; check S3_BUCKET (and S3_REGION / S3_ENDPOINT_URL)",
    "AccessDenied": "the credentials may not write to this bucket (s3:PutObject)",
    "403": "access denied; check the credentials and their s3:PutObject permission",
    "InvalidAccessKeyId": _CREDENTIALS,
    "SignatureDoesNotMatch": _CREDENTIALS,
    "ExpiredToken": "the session token has expired; " + _CREDENTIALS,
    "RequestTimeTooSkewed": "this node's clock is off; fix its time sync (NTP)",
    "PermanentRedirect": "the bucket is in another region; check S3_REGION",
    "301": "the bucket is in another region; check S3_REGION",
}


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = "gpuid"
    region: str | None = None  # None = the AWS chain decides
    endpoint_url: str | None = None  # MinIO, Ceph, R2 ...
    force_path_style: bool = False  # needed by most S3-compatible stores and by moto
    partition_pattern: str = "year=%Y/month=%m/day=%d/hour=%H"  # Hive-style, what Athena/Glue expect
    format: str = "jsonl"
    compress: str = "none"
    sse: str | None = None
    sse_kms_key_id: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Env) -> S3Settings:
        bucket = env.str("S3_BUCKET")
        if not bucket:
            raise ConfigError("S3_BUCKET is required by the s3 exporter")
        if not _BUCKET.match(bucket):
            raise ConfigError(f"S3_BUCKET={bucket!r} is invalid: not a bucket name")
        pattern = env.str("S3_PARTITION_PATTERN").strip("/")
        try:
            time.strftime(pattern, time.gmtime(0))
        except ValueError as e:
            raise ConfigError(f"S3_PARTITION_PATTERN={pattern!r} is invalid: {e}") from None
        endpoint = env.str("S3_ENDPOINT_URL")
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"S3_ENDPOINT_URL={endpoint!r} is invalid: use an http(s):// URL")
        sse = env.str("S3_SSE")
        if sse not in ("", "AES256", "aws:kms"):
            raise ConfigError(f"S3_SSE={sse!r} is invalid: choose AES256 or aws:kms, or leave it empty")
        return cls(
            bucket=bucket,
            prefix=env.str("S3_PREFIX").strip("/"),
            region=env.str("S3_REGION") or None,
            endpoint_url=endpoint or None,
            force_path_style=env.bool("S3_FORCE_PATH_STYLE"),
            partition_pattern=pattern,
            format=env.choice("S3_FORMAT", ("jsonl", "csv")),
            compress=env.choice("S3_COMPRESS", ("none", "gzip")),
            sse=sse or None,
            sse_kms_key_id=env.str("S3_SSE_KMS_KEY_ID") or None,
            timeout=env.duration("S3_TIMEOUT", minimum=0.1, maximum=HOUR),
        )

    def encryption(self) -> dict[str, str]:
        """The server-side-encryption arguments of a PutObject or CreateMultipartUpload."""
        args: dict[str, str] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
            if self.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args


async def open_client(settings: S3Settings, stack: contextlib.AsyncExitStack, *, attempts: int) -> Any:
    """An S3 client for ``settings``, closed with ``stack``; ``attempts`` caps botocore's own retries."""
    import aioboto3
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(
        connect_timeout=settings.timeout,
        read_timeout=settings.timeout,
        retries={"mode": "standard", "max_attempts": attempts},
        s3={"addressing_style": "path" if settings.force_path_style else "auto"},
        request_checksum_calculation="when_required",  # S3-compatible stores differ on CRC32 checksums
    )
    client = aioboto3.Session().client(
        "s3", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config
    )
    opened = await stack.enter_async_context(client)
    from botocore.handlers import add_expect_header  # type: ignore[import-untyped]

    opened.meta.events.unregister("before-call.s3", add_expect_header)
    return opened


async def s3_call(settings: S3Settings, call: Awaitable[T]) -> T:
    """Await one S3 ``call`` within ``S3_TIMEOUT``; its failure wrapped by ``s3_error`` (the cause kept)."""
    timer = asyncio.timeout(settings.timeout)
    try:
        async with timer:
            return await call
    except Exception as e:
        if timer.expired():
            message = f"s3 bucket {settings.bucket!r}: no answer within {settings.timeout:g}s (S3_TIMEOUT)"
            raise ExportError(message) from None
        raise s3_error(e, settings.bucket) from e


def error_code(e: BaseException | None) -> str:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchBucket``, ``403``...), else ""."""
    response = getattr(e, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def s3_error(e: Exception, bucket: str) -> ExportError:
    """Wrap a botocore failure in its class: transient, record (too large) or lane (see the module)."""
    import botocore.exceptions as bex  # type: ignore[import-untyped]

    if isinstance(e, ExportError):
        return e
    if isinstance(e, bex.ClientError):
        error = e.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        hint = _HINTS.get(code, "")
        message = f"s3 bucket {bucket!r}: {code or status} {error.get('Message', '')}".rstrip()
        message += f"; {hint}" if hint else ""
        if status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES:
            return ExportError(message)
        if code in _RECORD_CODES:
            return RecordError(message)
        return LaneError(message)
    configuration = (
        bex.NoCredentialsError,
        bex.PartialCredentialsError,
        bex.CredentialRetrievalError,
        bex.UnknownCredentialError,
        bex.BaseEndpointResolverError,
        bex.ParamValidationError,
        bex.ValidationError,
    )
    if isinstance(e, configuration):
        return LaneError(f"s3: {e}; check the AWS credential chain (env, IRSA, instance profile) and S3_*")
    # Endpoint unreachable, connection reset, timeouts, and anything else from the transport.
    return ExportError(f"s3 bucket {bucket!r}: {type(e).__name__}: {e}")
