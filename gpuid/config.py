"""Settings: every knob gpuid has, read from one mapping, validated up front.

Options are declared once in ``OPTIONS`` (environment variable, default, help),
which also drives ``gpuid --help`` and the CLI flags. ``load_settings`` is the
only place that turns strings into typed, frozen settings; it takes a mapping
so tests pass a dict, and it raises one ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from gpuid.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    env: str
    default: str
    help: str
    group: str = "core"

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")


OPTIONS: list[Option] = [
    Option("CLUSTER_NAME", "", "Name of this cluster, stamped on every record (required)."),
    Option("NAMESPACE", "gpu-operator", "Namespace of the device-plugin pods."),
    Option("LABEL_SELECTOR", "app=nvidia-device-plugin-daemonset", "Label selector of the pods to scan."),
    Option(
        "CONTAINER",
        "nvidia-device-plugin",
        "Container to exec into; empty = the pod's default-container annotation or its only container.",
    ),
    Option("NODE_NAME", "", "Only scan pods on this node (per-node DaemonSet mode)."),
    Option("EXPORTER_TYPE", "stdout", "Comma-separated exporters: stdout."),
    Option("WORKERS", "16", "Maximum concurrent pod scans."),
    Option("TIMEOUT", "30s", "Per-pod scan budget (Go-style 30s/5m/1h or plain seconds)."),
    Option("MAX_OUTPUT_BYTES", "33554432", "Cap on nvidia-smi output per exec, in bytes."),
    Option("RETRY_MAX_BACKOFF", "5m", "Longest wait between retries of a failing pod scan."),
    Option("SHUTDOWN_GRACE", "20s", "How long in-flight scans and exports may run after SIGTERM."),
    Option("LOG_LEVEL", "info", "debug, info, warning or error."),
    Option("LOG_FORMAT", "auto", "json, console, or auto (console on a TTY, else json)."),
    Option("SERVER_PORT", "8080", "Port of /metrics, /healthz and /readyz (0 = off)."),
    Option("KUBECONFIG", "", "Kubeconfig path, used when not running in a cluster."),
    # --- export (issue 3) ---
    Option("EXPORT_BATCH_SIZE", "500", "Most records per batch sent to one exporter.", "export"),
    Option("EXPORT_FLUSH_INTERVAL", "1s", "Longest wait for a batch to fill before it is sent.", "export"),
    Option(
        "EXPORT_QUEUE_SIZE",
        "10000",
        "Records held in memory per exporter; beyond it records go to the spool, or are dropped and counted.",
        "export",
    ),
    Option("EXPORT_RETRY_MAX_BACKOFF", "30s", "Longest wait between retries of a failed batch.", "export"),
    Option(
        "SPOOL_DIR", "", "Directory where unacknowledged records survive restarts (empty = off).", "export"
    ),
    Option(
        "SPOOL_MAX_BYTES", "268435456", "Cap on the spool's size on disk, all exporters together.", "export"
    ),
    Option("S3_BUCKET", "", "Bucket for the s3 exporter (required with it).", "export"),
    Option("S3_PREFIX", "gpuid", "Key prefix of the objects written.", "export"),
    Option(
        "S3_REGION", "", "Region; empty = the AWS chain (AWS_REGION, profile, instance metadata).", "export"
    ),
    Option("S3_ENDPOINT_URL", "", "S3-compatible endpoint (MinIO, Ceph, R2); empty = AWS.", "export"),
    Option(
        "S3_FORCE_PATH_STYLE",
        "false",
        "Address buckets as endpoint/bucket instead of bucket.endpoint.",
        "export",
    ),
    Option(
        "S3_PARTITION_PATTERN",
        "year=%Y/month=%m/day=%d/hour=%H",
        "strftime pattern of the key's time part.",
        "export",
    ),
    Option(
        "S3_FORMAT",
        "jsonl",
        "jsonl (one record per line) or csv (header row, documented column order).",
        "export",
    ),
    Option("S3_COMPRESS", "none", "none or gzip.", "export"),
    Option("S3_SSE", "", "Server-side encryption: empty, AES256 or aws:kms.", "export"),
    Option(
        "S3_SSE_KMS_KEY_ID", "", "KMS key for S3_SSE=aws:kms (empty = the bucket's default key).", "export"
    ),
    Option("S3_TIMEOUT", "30s", "Connect and read timeout of one S3 request.", "export"),
    Option(
        "POSTGRES_DSN",
        "",
        "postgresql:// URL; when set, the POSTGRES_HOST... variables are ignored.",
        "export",
    ),
    Option("POSTGRES_HOST", "localhost", "PostgreSQL host.", "export"),
    Option("POSTGRES_PORT", "5432", "PostgreSQL port.", "export"),
    Option("POSTGRES_DB", "gpuid", "PostgreSQL database.", "export"),
    Option("POSTGRES_USER", "gpuid", "PostgreSQL user.", "export"),
    Option("POSTGRES_PASSWORD", "", "PostgreSQL password (never logged).", "export"),
    Option(
        "POSTGRES_SSLMODE",
        "",
        "disable, prefer, require, verify-ca or verify-full; empty = require off loopback.",
        "export",
    ),
    Option("POSTGRES_SCHEMA", "public", "Schema of gpuid's tables.", "export"),
    Option("POSTGRES_READINGS_TABLE", "gpu_readings", "Append-only history of readings.", "export"),
    Option(
        "POSTGRES_INVENTORY_TABLE",
        "gpu_inventory",
        "One row per (cluster, gpu_uuid): where it is now.",
        "export",
    ),
    Option(
        "POSTGRES_MOVES_TABLE",
        "gpu_moves",
        "One row per GPU seen on a different machine than before.",
        "export",
    ),
    Option(
        "POSTGRES_AUTO_MIGRATE",
        "false",
        "Create and upgrade the tables at start-up (needs DDL rights).",
        "export",
    ),
    Option("POSTGRES_POOL_SIZE", "4", "Most connections to PostgreSQL.", "export"),
    Option("POSTGRES_TIMEOUT", "10s", "Connect and statement timeout.", "export"),
    Option(
        "HTTP_ENDPOINT",
        "",
        "URL the http exporter POSTs each batch to as a JSON array (required with it).",
        "export",
    ),
    Option("HTTP_TIMEOUT", "10s", "Timeout of one HTTP request.", "export"),
    Option("HTTP_AUTH_TOKEN", "", "Bearer token sent to HTTP_ENDPOINT (never logged).", "export"),
]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_LEVELS = ("debug", "info", "warning", "error")


def parse_duration(text: str) -> float:
    """Seconds from ``"30s"``, ``"1m30s"``, ``"1h"``, ``"250ms"`` or ``"12.5"``."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h or seconds)")
    return total


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


class Env:
    """Typed, validated reads from a string mapping, defaults from ``OPTIONS``."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self._defaults = {o.env: o.default for o in OPTIONS}

    def str(self, name: builtins.str) -> builtins.str:
        raw = self._values.get(name)
        return (self._defaults.get(name, "") if raw is None else raw).strip()

    def _typed(self, name: builtins.str, conv: Callable[[builtins.str], T]) -> T:
        raw = self.str(name)
        try:
            return conv(raw)
        except ValueError as e:
            raise ConfigError(f"{name}={raw!r} is invalid: {e}") from None

    def int(self, name: builtins.str, *, minimum: int = 0) -> int:
        value = self._typed(name, int)
        if value < minimum:
            raise ConfigError(f"{name}={value} is invalid: must be >= {minimum}")
        return value

    def duration(self, name: builtins.str, *, positive: bool = True) -> float:
        value = self._typed(name, parse_duration)
        if positive and value <= 0:
            raise ConfigError(f"{name} must be a positive duration, got {self.str(name)!r}")
        return value

    def bool(self, name: builtins.str) -> bool:
        return self._typed(name, parse_bool)

    def choice(self, name: builtins.str, choices: tuple[builtins.str, ...]) -> builtins.str:
        value = self.str(name).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is invalid: choose one of {', '.join(choices)}")
        return value

    def list(self, name: builtins.str) -> tuple[builtins.str, ...]:
        return tuple(p.strip().lower() for p in self.str(name).split(",") if p.strip())


@dataclass(frozen=True)
class WatchSettings:
    namespace: str = "gpu-operator"
    label_selector: str = "app=nvidia-device-plugin-daemonset"
    container: str = "nvidia-device-plugin"
    node_name: str = ""


@dataclass(frozen=True)
class ScanSettings:
    workers: int = 16
    timeout: float = 30.0
    max_output_bytes: int = 32 * 1024 * 1024
    retry_base: float = 1.0
    retry_max: float = 300.0


@dataclass(frozen=True)
class Settings:
    cluster_name: str
    watch: WatchSettings = field(default_factory=WatchSettings)
    scan: ScanSettings = field(default_factory=ScanSettings)
    exporters: tuple[str, ...] = ("stdout",)
    shutdown_grace: float = 20.0
    log_level: str = "info"
    log_format: str = "auto"
    server_port: int = 8080
    kubeconfig: str = ""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)


def load_settings(values: Mapping[str, str]) -> Settings:
    """Validate ``values`` (normally ``os.environ``) into ``Settings``."""
    env = Env(values)
    cluster = env.str("CLUSTER_NAME")
    if not cluster:
        raise ConfigError("CLUSTER_NAME is required: set it to a name for this cluster")
    namespace = env.str("NAMESPACE")
    if not namespace:
        raise ConfigError("NAMESPACE must not be empty")
    exporters = env.list("EXPORTER_TYPE")
    if not exporters:
        raise ConfigError("EXPORTER_TYPE must name at least one exporter")
    port = env.int("SERVER_PORT")
    if port > 65535:
        raise ConfigError(f"SERVER_PORT={port} is invalid: must be <= 65535")
    return Settings(
        cluster_name=cluster,
        watch=WatchSettings(
            namespace=namespace,
            label_selector=env.str("LABEL_SELECTOR"),
            container=env.str("CONTAINER"),
            node_name=env.str("NODE_NAME"),
        ),
        scan=ScanSettings(
            workers=env.int("WORKERS", minimum=1),
            timeout=env.duration("TIMEOUT"),
            max_output_bytes=env.int("MAX_OUTPUT_BYTES", minimum=1024),
            retry_max=env.duration("RETRY_MAX_BACKOFF"),
        ),
        exporters=exporters,
        shutdown_grace=env.duration("SHUTDOWN_GRACE"),
        log_level=env.choice("LOG_LEVEL", _LEVELS),
        log_format=env.choice("LOG_FORMAT", ("json", "console", "auto")),
        server_port=port,
        kubeconfig=env.str("KUBECONFIG"),
        env=dict(values),
    )
