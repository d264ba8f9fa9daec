"""Every knob gpuid has, declared once: variable, default, help, group.

This table drives ``gpuid --help``, the CLI flags and the defaults of
``gpuid.config.Env``; the README's settings tables document the same rows
(a test keeps them in step). Kept apart from ``config`` because it only grows.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    Option('EXPORTER_TYPE', '', 'Comma-separated exporters: stdout, s3, postgres, http; joined with those the EXPORTER_<NAME> flags turn on (none at all = stdout).'),
    Option('EXPORTER_STDOUT', 'false', 'Turn on the stdout exporter (besides those EXPORTER_TYPE names).'),
    Option('EXPORTER_S3', 'false', 'Turn on the s3 exporter (besides those EXPORTER_TYPE names).'),
    Option('EXPORTER_POSTGRES', 'false', 'Turn on the postgres exporter (besides those EXPORTER_TYPE names).'),
    Option('EXPORTER_HTTP', 'false', 'Turn on the http exporter (besides those EXPORTER_TYPE names).'),
    Option('WORKERS', '16', 'Maximum concurrent pod scans.'),
    Option('TIMEOUT', '30s', 'Per-pod scan budget (Go-style 30s/5m/1h or plain seconds).'),
    Option('MAX_OUTPUT_BYTES', '33554432', 'Cap on nvidia-smi output per exec, in bytes.'),
    Option('RETRY_MAX_BACKOFF', '5m', 'Longest wait between retries of a failing pod scan.'),
    Option('SHUTDOWN_GRACE', '20s', 'How long in-flight scans and exports may run after SIGTERM.'),
    Option('LOG_LEVEL', 'info', 'debug, info, warning or error.'),
    Option('LOG_FORMAT', 'auto', 'json, console, or auto (console on a TTY, else json).'),
    Option('SERVER_PORT', '8080', 'Port of /metrics, /healthz and /readyz (0 = any free port, logged at start-up).'),
    Option('KUBECONFIG', '', 'Kubeconfig path, used when not running in a cluster.'),
    # --- export ---
    Option('EXPORT_BATCH_SIZE', '500', 'Most records per batch sent to one exporter.', 'export'),
    Option('EXPORT_FLUSH_INTERVAL', '0s', 'Longest wait for a batch to fill; 0 = send as soon as the exporter is idle (records that queue meanwhile form the next batch).', 'export'),
    Option('EXPORT_QUEUE_SIZE', '10000', 'Records held in memory per exporter; beyond it records go to the spool, or are dropped and counted.', 'export'),
    Option('EXPORT_RETRY_MAX_BACKOFF', '30s', 'Longest wait between retries of a failed batch.', 'export'),
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
    Option('S3_TIMEOUT', '30s', 'Connect and read timeout of one S3 request.', 'export'),
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
    Option('BUG_REPORT_DIR', '', 'Directory bug reports are stored in, one subdirectory per node (hostPath or PVC).', 'bugreport'),
    Option('BUG_REPORT_S3', 'false', "Upload bug reports to the S3 exporter's bucket (S3_BUCKET and S3_* settings).", 'bugreport'),
    Option('MAX_LOGS_TO_KEEP', '5', 'Bug reports kept per node in BUG_REPORT_DIR; the oldest are removed.', 'bugreport'),
    Option('BUG_REPORT_TIMEOUT', '300s', 'Deadline of one collection: script, checksum and download.', 'bugreport'),
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
]
# fmt: on
