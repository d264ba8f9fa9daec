"""Typed settings of delivery and of the S3, PostgreSQL and HTTP exporters.

``config.load_settings`` keeps the raw variables in ``Settings.env``; each
exporter parses only its own group here, when it is selected, so a missing
``S3_BUCKET`` only matters to someone who asked for S3. Everything is read
through ``Env`` (one place, defaults from ``options.OPTIONS``), validated up
front, and errors name the variable. Secrets are ``repr=False`` and never
echoed in an error message.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gpuid.config import Env, Settings
from gpuid.errors import ConfigError

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _identifier(env: Env, name: str) -> str:
    value = env.str(name)
    if not _IDENT.match(value):
        raise ConfigError(f"{name}={value!r} is invalid: use lowercase letters, digits and _ (max 63)")
    return value


@dataclass(frozen=True)
class DeliverySettings:
    batch_size: int = 500  # one COPY / one object per batch; bigger batches amortise round trips
    flush_interval: float = 0.0  # 0: send when the exporter is idle; what queues meanwhile is the next batch
    queue_size: int = 10_000  # per exporter, in memory; the spool takes over beyond it
    retry_max_backoff: float = 30.0  # a backend that comes back is noticed within this
    spool_dir: Path | None = None  # off by default: a DaemonSet needs a volume for it
    spool_max_bytes: int = 256 * 1024 * 1024  # bounded, so a long outage cannot fill the node's disk

    @classmethod
    def from_env(cls, env: Env) -> DeliverySettings:
        batch = env.int("EXPORT_BATCH_SIZE", minimum=1)
        queue = env.int("EXPORT_QUEUE_SIZE", minimum=1)
        if queue < batch:
            raise ConfigError(f"EXPORT_QUEUE_SIZE={queue} is invalid: must be >= EXPORT_BATCH_SIZE ({batch})")
        spool = env.str("SPOOL_DIR")
        return cls(
            batch_size=batch,
            flush_interval=env.duration("EXPORT_FLUSH_INTERVAL", positive=False),
            queue_size=queue,
            retry_max_backoff=env.duration("EXPORT_RETRY_MAX_BACKOFF"),
            spool_dir=Path(spool) if spool else None,
            spool_max_bytes=env.int("SPOOL_MAX_BYTES", minimum=64 * 1024),
        )


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
            timeout=env.duration("S3_TIMEOUT"),
        )


@dataclass(frozen=True)
class PostgresSettings:
    host: str = "localhost"
    port: int = 5432
    database: str = "gpuid"
    user: str = "gpuid"
    password: str = field(default="", repr=False)
    dsn: str = field(default="", repr=False)  # may embed a password
    sslmode: str | None = None  # None = whatever the DSN (or libpq's default) says
    schema: str = "public"
    readings_table: str = "gpu_readings"
    inventory_table: str = "gpu_inventory"
    moves_table: str = "gpu_moves"
    auto_migrate: bool = False  # off: a DBA may grant INSERT/UPDATE only
    pool_size: int = 4
    timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Env) -> PostgresSettings:
        dsn = env.str("POSTGRES_DSN")
        if dsn and urlsplit(dsn).scheme not in ("postgres", "postgresql"):
            raise ConfigError("POSTGRES_DSN is invalid: it must start with postgresql://")
        host = env.str("POSTGRES_HOST")
        if not dsn and not host:
            raise ConfigError("POSTGRES_HOST (or POSTGRES_DSN) is required by the postgres exporter")
        port = env.int("POSTGRES_PORT", minimum=1)
        if port > 65535:
            raise ConfigError(f"POSTGRES_PORT={port} is invalid: must be <= 65535")
        sslmode = env.str("POSTGRES_SSLMODE").lower() or None
        if sslmode is not None and sslmode not in SSLMODES:
            raise ConfigError(f"POSTGRES_SSLMODE={sslmode!r} is invalid: choose one of {', '.join(SSLMODES)}")
        if sslmode is None and not dsn:
            sslmode = "prefer" if host in _LOOPBACK or host.startswith("/") else "require"
        tables = {
            "POSTGRES_READINGS_TABLE": _identifier(env, "POSTGRES_READINGS_TABLE"),
            "POSTGRES_INVENTORY_TABLE": _identifier(env, "POSTGRES_INVENTORY_TABLE"),
            "POSTGRES_MOVES_TABLE": _identifier(env, "POSTGRES_MOVES_TABLE"),
        }
        if len(set(tables.values())) != len(tables):
            raise ConfigError(f"{', '.join(tables)} must name three different tables")
        return cls(
            host=host,
            port=port,
            database=env.str("POSTGRES_DB"),
            user=env.str("POSTGRES_USER"),
            password=env.str("POSTGRES_PASSWORD"),
            dsn=dsn,
            sslmode=sslmode,
            schema=_identifier(env, "POSTGRES_SCHEMA"),
            readings_table=tables["POSTGRES_READINGS_TABLE"],
            inventory_table=tables["POSTGRES_INVENTORY_TABLE"],
            moves_table=tables["POSTGRES_MOVES_TABLE"],
            auto_migrate=env.bool("POSTGRES_AUTO_MIGRATE"),
            pool_size=env.int("POSTGRES_POOL_SIZE", minimum=1),
            timeout=env.duration("POSTGRES_TIMEOUT"),
        )

    @property
    def target(self) -> str:
        """Where we connect, safe to log: no password."""
        if self.dsn:
            parts = urlsplit(self.dsn)
            where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"
            return f"{parts.username or ''}@{where}" if parts.username else where
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never reach a log line or an error message."""
        found = [self.password, urlsplit(self.dsn).password or "" if self.dsn else ""]
        return tuple(s for s in found if s)


@dataclass(frozen=True)
class HttpSettings:
    endpoint: str
    timeout: float = 10.0
    auth_token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Env) -> HttpSettings:
        endpoint = env.str("HTTP_ENDPOINT")
        if not endpoint:
            raise ConfigError("HTTP_ENDPOINT is required by the http exporter")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"HTTP_ENDPOINT={endpoint!r} is invalid: use an http(s):// URL")
        if parts.password:
            raise ConfigError("HTTP_ENDPOINT must not embed credentials: use HTTP_AUTH_TOKEN")
        return cls(
            endpoint=endpoint, timeout=env.duration("HTTP_TIMEOUT"), auth_token=env.str("HTTP_AUTH_TOKEN")
        )


def env_of(settings: Settings) -> Env:
    """The typed reader over the raw variables ``load_settings`` kept."""
    return Env(settings.env)
