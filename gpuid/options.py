"""Every knob gpuid has, declared once, and the typed reader every package parses its settings with.

``OPTIONS`` (variable, default, help, group) drives ``gpuid --help``, the CLI
flags and the defaults ``Env`` falls back to; the configuration reference in
docs/ documents the same rows (a test keeps them in step). ``Env`` turns
strings into validated values and raises one ``ConfigError`` naming the
variable. Each package parses its own group with it; ``gpuid.config`` is the
one place that hands it the process's variables.
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


# fmt: off
OPTIONS: list[Option] = [
    # --- core ---
    Option('CLUSTER_NAME', '', 'Name of this cluster, stamped on every record (required).'),
    Option('NAMESPACE', 'gpu-operator', 'Namespace of the device-plugin pods.'),
    Option('LABEL_SELECTOR', 'app=nvidia-device-plugin-daemonset', 'Label selector of the pods to scan.'),
    Option('CONTAINER', 'nvidia-device-plugin', "Container to exec into; empty = the pod's default-container annotation or its only container."),
    Option('NODE_NAME', '', 'Only scan pods on this node (per-node DaemonSet mode).'),
    Option('EXPORTER_TYPE', '', 'Comma-separated exporters: stdout, s3, postgres, http; added to those the EXPORTER_<NAME> flags select; stdout when nothing is selected.'),
    Option('EXPORTER_STDOUT', 'false', 'Run the stdout exporter (in addition to EXPORTER_TYPE).'),
    Option('EXPORTER_S3', 'false', 'Run the s3 exporter (in addition to EXPORTER_TYPE).'),
    Option('EXPORTER_POSTGRES', 'false', 'Run the postgres exporter (in addition to EXPORTER_TYPE).'),
    Option('EXPORTER_HTTP', 'false', 'Run the http exporter (in addition to EXPORTER_TYPE).'),
    Option('WORKERS', '64', 'Maximum concurrent pod scans (size: exec latency / CPU per scan; see docs/benchmarks.md).'),
    Option('TIMEOUT', '30s', 'Per-pod scan budget (Go-style 30s/5m/1h or plain seconds).'),
    Option('MAX_OUTPUT_BYTES', '4194304', 'Cap on nvidia-smi output per exec, in bytes (the parser refuses more than 4 MiB).'),
    Option('RETRY_MAX_BACKOFF', '5m', 'Longest wait between retries of a failing pod scan.'),
    Option('SHUTDOWN_GRACE', '20s', 'How long in-flight scans and exports may run after SIGTERM.'),
    Option('LOG_LEVEL', 'info', 'debug, info, warning or error.'),
    Option('LOG_FORMAT', 'auto', 'json, console, or auto (console on a TTY, else json).'),
    Option('SERVER_PORT', '8080', 'Port of /metrics, /healthz and /readyz (0 = any free port, logged at start-up).'),
    Option('KUBECONFIG', '', 'Kubeconfig path, used when not running in a cluster.'),
    Option('KUBE_PROXY_FROM_ENV', 'false', "Reach the API server through the proxy HTTPS_PROXY/HTTP_PROXY name for it (NO_PROXY honoured), read once at start-up; off: only the kubeconfig's proxy-url."),
    # --- export ---
    Option('EXPORT_BATCH_SIZE', '500', 'Most records per batch sent to one exporter.', 'export'),
    Option('EXPORT_FLUSH_INTERVAL', '0s', 'Longest wait for a batch to fill; 0 = send as soon as the exporter is idle (records that queue meanwhile form the next batch).', 'export'),
    Option('EXPORT_QUEUE_SIZE', '10000', 'Records held in memory per exporter; beyond it records go to the spool, or are dropped and counted.', 'export'),
    Option('EXPORT_RETRY_MAX_BACKOFF', '30s', 'Longest wait between retries of a failed batch; a parked (misconfigured) exporter retries every this to twice this.', 'export'),
    Option('SPOOL_DIR', '', 'Directory where unacknowledged records survive restarts (empty = off).', 'export'),
    Option('SPOOL_MAX_BYTES', '268435456', "Cap on each exporter's spool on disk (a dead backend cannot take another's room).", 'export'),
    Option('S3_BUCKET', '', 'Bucket for the s3 exporter (required with it).', 'export'),
    Option('S3_PREFIX', 'gpuid', 'Key prefix of the objects written.', 'export'),
    Option('S3_REGION', '', 'Region; empty = the AWS chain (AWS_REGION, profile, instance metadata).', 'export'),
    Option('S3_ENDPOINT_URL', '', 'S3-compatible endpoint (MinIO, Ceph, R2); empty = AWS.', 'export'),
    Option('S3_FORCE_PATH_STYLE', 'false', 'Address buckets as endpoint/bucket instead of bucket.endpoint.', 'export'),
    Option('S3_PARTITION_PATTERN', 'year=%Y/month=%m/day=%d/hour=%H', "strftime pattern of the key's time part.", 'export'),
    Option('S3_FORMAT', 'jsonl', 'jsonl (one record per line) or csv (header row, documented column order).', 'export'),
    Option('S3_COMPRESS', 'none', 'none or gzip.', 'export'),
    Option('S3_SSE', '', 'Server-side encryption: empty, AES256 or aws:kms.', 'export'),
    Option('S3_SSE_KMS_KEY_ID', '', "KMS key for S3_SSE=aws:kms (empty = the bucket's default key).", 'export'),
    Option('S3_TIMEOUT', '30s', 'Deadline of each S3 call (connecting, sending, the answer).', 'export'),
    Option('POSTGRES_DSN', '', 'postgresql:// URL; when set, the POSTGRES_HOST... variables are ignored.', 'export'),
    Option('POSTGRES_HOST', 'localhost', 'PostgreSQL host.', 'export'),
    Option('POSTGRES_PORT', '5432', 'PostgreSQL port.', 'export'),
    Option('POSTGRES_DB', 'gpuid', 'PostgreSQL database.', 'export'),
    Option('POSTGRES_USER', 'gpuid', 'PostgreSQL user.', 'export'),
    Option('POSTGRES_PASSWORD', '', 'PostgreSQL password (never logged).', 'export'),
    Option('POSTGRES_SSLMODE', '', 'disable, prefer, require, verify-ca or verify-full; empty = require off loopback.', 'export'),
    Option('POSTGRES_SCHEMA', 'public', "Schema of gpuid's tables.", 'export'),
    Option('POSTGRES_READINGS_TABLE', 'gpu_readings', 'Append-only history of readings.', 'export'),
    Option('POSTGRES_INVENTORY_TABLE', 'gpu_inventory', 'One row per (cluster, gpu_uuid): where it is now.', 'export'),
    Option('POSTGRES_MOVES_TABLE', 'gpu_moves', 'One row per GPU seen on a different machine than before.', 'export'),
    Option('POSTGRES_AUTO_MIGRATE', 'false', 'Create and upgrade the tables at start-up (needs DDL rights).', 'export'),
    Option('POSTGRES_POOL_SIZE', '4', 'Most connections to PostgreSQL.', 'export'),
    Option('POSTGRES_BATCH_SIZE', '2000', 'Most records per transaction written to PostgreSQL (instead of EXPORT_BATCH_SIZE).', 'export'),
    Option('POSTGRES_TIMEOUT', '10s', 'Connect and statement timeout.', 'export'),
    Option('HTTP_ENDPOINT', '', 'URL the http exporter POSTs each batch to as a JSON array (required with it).', 'export'),
    Option('HTTP_TIMEOUT', '10s', 'Timeout of one HTTP request.', 'export'),
    Option('HTTP_AUTH_TOKEN', '', 'Bearer token sent to HTTP_ENDPOINT (never logged).', 'export'),
    # --- driver pods and bug reports ---
    Option('SCAN_SOURCE', 'device-plugin', "Pods nvidia-smi runs in: device-plugin, driver, or auto (device-plugin, falling back to the node's driver pod when nvidia-smi is missing there).", 'bugreport'),
    Option('DRIVER_NAMESPACE', '', 'Namespace of the driver pods (empty = NAMESPACE).', 'bugreport'),
    Option('DRIVER_LABEL_SELECTOR', 'app.kubernetes.io/component=nvidia-driver', "Label selector of the driver pods (the GPU Operator's stable one).", 'bugreport'),
    Option('DRIVER_CONTAINER', '', "Driver container; empty = the pod's default-container annotation, else the first container whose name contains 'driver'.", 'bugreport'),
    Option('BUG_REPORT_ENABLED', 'false', 'Collect nvidia-bug-report.sh output from driver pods (on request, on failure, on schedule).', 'bugreport'),
    Option('BUG_REPORT_DIR', '', 'Directory bug reports are stored in, one subdirectory per node (an emptyDir, or a PVC to keep them).', 'bugreport'),
    Option('BUG_REPORT_S3', 'false', "Upload bug reports to the S3 exporter's bucket (S3_BUCKET and S3_* settings).", 'bugreport'),
    Option('MAX_LOGS_TO_KEEP', '5', 'Bug reports kept per node in BUG_REPORT_DIR; the oldest are removed.', 'bugreport'),
    Option('BUG_REPORT_TIMEOUT', '300s', 'Deadline of one collection: script, checksum and download.', 'bugreport'),
    Option('BUG_REPORT_MAX_BYTES', '1073741824', 'Largest bug report accepted, in bytes (checked against the size the pod announces and while streaming).', 'bugreport'),
    Option('BUG_REPORT_ON_FAILURE', 'false', 'Collect a report when a scan fails with an nvidia-smi error.', 'bugreport'),
    Option('BUG_REPORT_MIN_INTERVAL', '1h', 'Least time between two on-failure reports of one node.', 'bugreport'),
    Option('BUG_REPORT_INTERVAL', '0', 'Collect from every node this often (0 = off).', 'bugreport'),
    Option('BUG_REPORT_CONCURRENCY', '2', 'Most collections running at once, cluster-wide.', 'bugreport'),
    Option('API_BASE_URL', '', 'Crusoe-compatible API mode: poll {API_BASE_URL}/check-tasks and POST /upload-logs (empty = off; needs NODE_NAME).', 'bugreport'),
    Option('API_POLL_INTERVAL', '60s', 'How often API mode polls check-tasks.', 'bugreport'),
    Option('VM_ID', '', 'This VM\'s id in API mode; empty = /host/sys/class/dmi/id/product_uuid.', 'bugreport'),
    # --- scale ---
    Option('LEADER_ELECTION', 'false', 'Only the holder of a coordination.k8s.io Lease scans, so 2+ replicas can run; ignored with NODE_NAME.', 'scale'),
    Option('LEASE_NAMESPACE', '', "Namespace of the Lease; empty = gpuid's own (POD_NAMESPACE), else gpuid.", 'scale'),
    Option('LEASE_NAME', 'gpuid', 'Name of the Lease.', 'scale'),
    Option('LEASE_DURATION', '15s', 'How long followers wait after the last renewal before taking over (>= 1s).', 'scale'),
    Option('LEASE_RENEW_DEADLINE', '10s', 'A leader that could not renew for this long stops scanning (< LEASE_DURATION).', 'scale'),
    Option('LEASE_RETRY_PERIOD', '2s', 'How often the leader renews and followers try to acquire (< LEASE_RENEW_DEADLINE).', 'scale'),
    Option('POD_NAME', '', 'Identity of this replica in the Lease (downward API); empty = the hostname.', 'scale'),
    Option('NODE_LABELS', 'false', 'Label each scanned node with its chassis and GPU serials (needs patch on nodes).', 'scale'),
    Option('LABEL_PREFIX', 'gpuid.io', 'Prefix of the node labels; gpuid.github.com matches the Go gpuid.', 'scale'),
    # --- fleet signals ---
    Option('GPU_INFO_METRIC', 'false', 'Export gpuid_gpu_info, one series per GPU whose labels join with dcgm-exporter (UUID, Hostname, pci_bus_id, modelName) and add serial, chassis_serial, module_id, machine.', 'fleet'),
    Option('NODE_GPU_METRICS', 'false', 'Export gpuid_node_gpus and gpuid_node_gpu_capacity, two series per scanned node.', 'fleet'),
    Option('GPU_CHANGE_EVENTS', 'false', "Keep each node's GPUs in its gpuid.io/gpus annotation and post a Kubernetes Event on the Node for each change (needs patch on nodes, create and get on events in default).", 'fleet'),
    Option('EXPECTED_GPUS', 'auto', 'GPUs a node should answer with: auto (nvidia.com/gpu.count, else nvidia.com/gpu capacity / nvidia.com/gpu.replicas), label, capacity, or off; MIG nodes are never checked.', 'fleet'),
]
# fmt: on


_NUMBER = r"[0-9]+(?:\.[0-9]+)?"  # ASCII only: str.isdigit, int() and float() also take '١٢', '1_0', 'nan'
_DURATION = re.compile(f"({_NUMBER})(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MAX_DIGITS = 30  # far beyond every bound; keeps int() away from huge strings

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
WEEK = 7 * DAY  # the ceiling of timeouts and intervals: anything longer is a typo, not a plan
KIB, MIB, GIB = 1024, 1024**2, 1024**3


def parse_duration(text: str) -> float:
    """Seconds from ``"30s"``, ``"1m30s"``, ``"1h"``, ``"7d"``, ``"250ms"`` or ``"12.5"``; finite, >= 0."""
    text = text.strip()
    if re.fullmatch(_NUMBER, text):
        total = float(text)
    else:
        pos, total = 0, 0.0
        for m in _DURATION.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNIT[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise ValueError("not a duration (use e.g. 30s, 5m, 1h or seconds)")
    if not math.isfinite(total):
        raise ValueError("not a finite duration")
    return total


def parse_int(text: str) -> int:
    """A whole number written in ASCII digits only (no sign, no ``_``, no other scripts' digits)."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError("not a whole number (use the digits 0-9 only)")
    if len(text) > _MAX_DIGITS:
        raise ValueError("far too large")
    return int(text)


def format_duration(seconds: float) -> str:
    """``seconds`` the way a user writes it: ``7d``, ``1h``, ``30s``, ``100ms``."""
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms" if 0 < seconds < 1 else f"{seconds:g}s"


def _shown(raw: str, limit: int = 40) -> str:
    """``raw`` quoted for an error line, cut short so a pasted blob cannot flood the log."""
    return repr(raw if len(raw) <= limit else raw[:limit] + "...")


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


class Env:
    """Typed, validated reads from a string mapping, defaults from ``OPTIONS``.

    Every number is read with its bounds (``minimum`` and ``maximum`` are
    required): a value outside them is a ``ConfigError`` naming the variable,
    so nan, inf, negative and absurd values stop gpuid at start-up instead of
    wedging it later.
    """

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
            raise ConfigError(f"{name}={_shown(raw)} is invalid: {e}") from None

    def int(self, name: builtins.str, *, minimum: int, maximum: int) -> int:
        value = self._typed(name, parse_int)
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}={value} is invalid: must be between {minimum} and {maximum}")
        return value

    def duration(self, name: builtins.str, *, minimum: float, maximum: float) -> float:
        value = self._typed(name, parse_duration)
        if not minimum <= value <= maximum:
            low, high = format_duration(minimum), format_duration(maximum)
            raise ConfigError(f"{name}={_shown(self.str(name))} is invalid: must be between {low} and {high}")
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
