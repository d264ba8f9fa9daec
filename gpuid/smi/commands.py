"""Every command line gpuid runs inside a pod, defined once.

gpuid's ServiceAccount may exec into the GPU Operator's pods, which is the one
dangerous right it holds; the admission policy that narrows it to gpuid's own
commands (deployment/components/exec-policy) is checked against this module,
so the two cannot drift. Nothing here runs anything: the scanner and the
bug-report collector pass these lists to the exec client.

``nvidia-smi`` and ``nvidia-bug-report.sh`` live on different paths in
device-plugin and driver containers (``/run/nvidia/driver/usr/bin`` in the
GPU Operator's driver container), so PATH is extended. A bug report's file
name is the only part that varies; ``REPORT_NAME`` is the exact shape it may
take, and every command that names it checks it first.
"""

from __future__ import annotations

import math
import re

SMI_PATH = "/run/nvidia/driver/usr/bin:/usr/local/nvidia/bin"
POD_DIR = "/tmp"  # noqa: S108 - a directory inside the driver container, where the script writes
# nvidia-bug-report-<node>[-<request>]-<YYYYmmdd_HHMMSS>.log, characters as safe_name leaves them.
# Written without backslashes and in RE2's syntax: the admission policy embeds it in CEL (smi/policy.py).
REPORT_NAME = re.compile(r"nvidia-bug-report-[A-Za-z0-9._-]{1,320}-[0-9]{8}_[0-9]{6}[.]log")


def smi_command(args: str) -> list[str]:
    return ["sh", "-c", f'PATH="$PATH:{SMI_PATH}" exec nvidia-smi {args}']


XML_COMMAND = smi_command("-q -x")
LIST_COMMAND = smi_command("-L")


def _report_path(name: str) -> str:
    if not REPORT_NAME.fullmatch(name):
        raise ValueError(f"not a bug-report file name: {name[:80]!r}")
    return f"{POD_DIR}/{name}"


def bug_report_command(name: str, timeout: float) -> list[str]:
    """``nvidia-bug-report.sh`` writing ``/tmp/<name>.gz``, killed in the pod at ``timeout``."""
    limit = max(1, math.ceil(timeout))
    script = (
        f'PATH="$PATH:{SMI_PATH}" exec timeout -s KILL {limit} '
        f"nvidia-bug-report.sh --output-file {_report_path(name)} >/dev/null"
    )
    return ["sh", "-c", script]


def checksum_command(name: str) -> list[str]:
    """SHA-256 and size of the finished report, computed in the pod."""
    path = _report_path(name) + ".gz"
    return ["sh", "-c", f"sha256sum {path} && wc -c {path}"]


def download_command(name: str) -> list[str]:
    return ["cat", _report_path(name) + ".gz"]


def cleanup_command(name: str) -> list[str]:
    path = _report_path(name)
    return ["rm", "-f", path, path + ".gz"]
