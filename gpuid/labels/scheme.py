"""Node labels with each node's chassis and GPU serials, in the Go gpuid's scheme.

Operators select and audit nodes by the hardware inside them
(``kubectl get nodes -l gpuid.io/chassis-0=1821325191234``), so after a
successful scan gpuid can label the node (opt-in, ``NODE_LABELS=true``). The
keys are those of the Go gpuid's ``pkg/node/label.go``, so
``LABEL_PREFIX=gpuid.github.com`` is a drop-in replacement for it:

- GPUs are grouped by chassis serial; groups sorted by serial (unknown first);
- ``<prefix>/chassis-<i>`` = serial of chassis group ``i`` (only when known);
- ``<prefix>/gpu-<j>`` (no chassis serial, e.g. H100 HGX) or
  ``<prefix>/chassis-<i>-gpu-<j>`` (GB200/GB300 racks) = the ``j``-th of the
  group's distinct GPU serials in sorted order (dies sharing a serial: one key);
- ``<prefix>/chassis-count`` = number of chassis groups.

Values are sanitised into valid label values (``[A-Za-z0-9._-]``, alphanumeric
at both ends, at most 63 characters; ``na`` when unknown). Keys under the
prefix that a scan no longer produces are removed (``null`` in the merge
patch), and when the node already carries exactly these labels nothing is
sent. A scan reporting more than ``MAX_GPUS`` GPUs, or needing more than
``MAX_LABELS`` labels, labels nothing (the writer counts it as ``too_many``).
Writing is ``gpuid.labels.writer``'s job; this module is pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpuid.errors import ConfigError
from gpuid.options import Env
from gpuid.records import GPUReading

UNKNOWN = "na"
# What one scan may put on its Node. Real nodes have 4 (GB200 tray) to 8 (HGX) GPUs; a pod's
# nvidia-smi is input, and a broken or hostile one must not write thousands of labels onto a Node.
MAX_GPUS = 64
MAX_LABELS = 100
MAX_VALUE = 63
_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_EDGES = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class LabelSettings:
    enabled: bool = False  # writing nodes needs RBAC (patch on nodes) many clusters do not grant
    prefix: str = "gpuid.io"

    @classmethod
    def from_env(cls, env: Env) -> LabelSettings:
        prefix = env.str("LABEL_PREFIX").rstrip("/")
        if len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix):
            raise ConfigError(
                f"LABEL_PREFIX={prefix!r} is invalid: must be a lowercase DNS subdomain like gpuid.io"
            )
        return cls(enabled=env.bool("NODE_LABELS"), prefix=prefix)


def sanitize(value: str | None) -> str:
    """A valid label value for ``value``: invalid characters become ``-``; ``na`` when nothing is left."""
    if not value or value == "N/A":
        return UNKNOWN
    cleaned = _EDGES.sub("", _INVALID_CHARS.sub("-", value.strip()))
    cleaned = _EDGES.sub("", cleaned[:MAX_VALUE])
    return cleaned or UNKNOWN


def desired_labels(prefix: str, readings: Sequence[GPUReading]) -> dict[str, str] | None:
    """The labels under ``prefix`` that describe the GPUs in ``readings`` (one scan of one node).

    None when the scan reports more than ``MAX_GPUS`` GPUs or would need more
    than ``MAX_LABELS`` labels: such a node gets no per-GPU labels at all.
    """
    if len(readings) > MAX_GPUS:
        return None
    groups: dict[str, set[str]] = {}
    for reading in readings:
        groups.setdefault(reading.chassis_serial or "", set()).add(reading.gpu_serial or "")
    labels: dict[str, str] = {}
    for i, chassis in enumerate(sorted(groups)):
        chassis_value = sanitize(chassis)
        if chassis_value != UNKNOWN:
            labels[f"{prefix}/chassis-{i}"] = chassis_value
        for j, serial in enumerate(sorted(groups[chassis])):
            key = f"chassis-{i}-gpu-{j}" if chassis_value != UNKNOWN else f"gpu-{j}"
            labels[f"{prefix}/{key}"] = sanitize(serial)
    labels[f"{prefix}/chassis-count"] = str(len(groups))
    return labels if len(labels) <= MAX_LABELS else None


def owned(prefix: str, labels: Mapping[str, str]) -> dict[str, str]:
    """The labels whose key is under ``prefix`` (``<prefix>/…``)."""
    head = prefix + "/"
    return {k: v for k, v in labels.items() if k.startswith(head)}


def label_patch(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str | None] | None:
    """The merge-patch labels turning ``current`` (owned keys) into ``desired``; None when equal."""
    patch: dict[str, str | None] = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update(dict.fromkeys(current.keys() - desired.keys()))
    return patch or None
