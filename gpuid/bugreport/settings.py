"""Settings of bug-report collection, parsed once at start-up by ``gpuid.config``.

Bug reports are off unless ``BUG_REPORT_ENABLED=true``; then every trigger
and destination is validated here, up front, so a half-configured collector
fails at start-up naming the variable instead of at the first request hours
later. The S3 destination reuses the S3 exporter's settings (bucket,
endpoint, region, encryption); credentials come from the same AWS chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gpuid.errors import ConfigError
from gpuid.exporters.s3client import S3Settings
from gpuid.options import DAY, GIB, KIB, WEEK, Env

VM_ID_FILE = Path("/host/sys/class/dmi/id/product_uuid")  # the node's DMI UUID through a hostPath


@dataclass(frozen=True)
class ApiSettings:
    """Crusoe-compatible API mode: poll for tasks for this VM, upload what was asked for."""

    base_url: str
    vm_id: str
    poll_interval: float = 60.0


@dataclass(frozen=True)
class BugReportSettings:
    enabled: bool = False  # reports cost 30-60 s of driver-pod CPU: nothing happens unless asked for
    directory: Path | None = None
    s3: S3Settings | None = None
    keep: int = 5  # per node in `directory`; Crusoe's collector keeps 5 too
    timeout: float = 300.0  # a full report on an 8-GPU node takes about a minute
    max_bytes: int = GIB  # one report, announced and streamed: a pod cannot fill the volume
    on_failure: bool = False
    min_interval: float = 3600.0  # at most one on-failure report per node per hour
    interval: float = 0.0  # scheduled collection from every node; 0 = off
    concurrency: int = 2  # cluster-wide: reports are heavy on the nodes and the network
    api: ApiSettings | None = None

    @classmethod
    def from_env(cls, env: Env, node_name: str, vm_id_file: Path = VM_ID_FILE) -> BugReportSettings:
        api = _api_settings(env, node_name, vm_id_file)
        if not env.bool("BUG_REPORT_ENABLED"):
            if api is not None:
                raise ConfigError("API_BASE_URL is set but BUG_REPORT_ENABLED is not true")
            return cls()
        directory = env.str("BUG_REPORT_DIR")
        s3 = S3Settings.from_env(env) if env.bool("BUG_REPORT_S3") else None
        if not directory and s3 is None and api is None:
            raise ConfigError(
                "BUG_REPORT_ENABLED=true needs a destination: set BUG_REPORT_DIR, BUG_REPORT_S3=true "
                "or API_BASE_URL"
            )
        return cls(
            enabled=True,
            directory=Path(directory) if directory else None,
            s3=s3,
            keep=env.int("MAX_LOGS_TO_KEEP", minimum=1, maximum=1000),
            timeout=env.duration("BUG_REPORT_TIMEOUT", minimum=1.0, maximum=DAY),
            max_bytes=env.int("BUG_REPORT_MAX_BYTES", minimum=KIB, maximum=64 * GIB),
            on_failure=env.bool("BUG_REPORT_ON_FAILURE"),
            min_interval=env.duration("BUG_REPORT_MIN_INTERVAL", minimum=0.0, maximum=WEEK),
            interval=env.duration("BUG_REPORT_INTERVAL", minimum=0.0, maximum=WEEK),
            concurrency=env.int("BUG_REPORT_CONCURRENCY", minimum=1, maximum=64),
            api=api,
        )


def _api_settings(env: Env, node_name: str, vm_id_file: Path) -> ApiSettings | None:
    base = env.str("API_BASE_URL").rstrip("/")
    if not base:
        return None
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"API_BASE_URL={base!r} is invalid: use an http(s):// URL")
    if parts.password:
        raise ConfigError("API_BASE_URL must not embed credentials")
    if not node_name:
        raise ConfigError("API_BASE_URL (API mode) works per node: set NODE_NAME (downward API)")
    return ApiSettings(
        base_url=base,
        vm_id=env.str("VM_ID") or read_vm_id(vm_id_file),
        poll_interval=env.duration("API_POLL_INTERVAL", minimum=0.1, maximum=DAY),
    )


def read_vm_id(path: Path = VM_ID_FILE) -> str:
    """The VM id from the node's DMI product UUID (mounted from the host), lower-cased."""
    try:
        value = path.read_text().strip().lower()
    except OSError as e:
        raise ConfigError(f"VM_ID is not set and {path} is not readable ({e.strerror})") from None
    if not value:
        raise ConfigError(f"VM_ID is not set and {path} is empty")
    return value
