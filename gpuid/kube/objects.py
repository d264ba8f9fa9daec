"""What gpuid keeps of pods and nodes: a few fields, not the whole object.

Watch events carry full objects (kilobytes each); at 10,000 pods keeping them
would dominate memory. ``PodInfo``/``NodeInfo`` hold what scanning, records
and the features need: a node keeps only the annotations and labels its
watch was asked for (``annotation_keys``, ``label_prefix``), so the kube layer
needs to know nothing of bug reports or node labels. A node also keeps what
it advertises of GPUs: its ``nvidia.com/gpu`` capacity, its MIG capacity and
the few GPU Feature Discovery labels that say how GPUs are shared
(``gpuid.fleet.expected`` turns them into the GPUs a node should have).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
GPU_RESOURCES = ("nvidia.com/gpu", "nvidia.com/gpu.shared")  # the second with renameByDefault sharing
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
GPU_LABELS = (  # GPU Feature Discovery's labels that say how a node's GPUs are counted and shared
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.replicas",
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.sharing-strategy",
    "nvidia.com/mig.strategy",
)


@dataclass(frozen=True, slots=True)
class PodInfo:
    uid: str
    name: str
    namespace: str
    node: str
    ready: bool
    restarts: int
    containers: tuple[str, ...]
    default_container: str | None
    resource_version: int = 0  # of this state; 0 when not an integer (the scan checkpoint ignores it)

    @property
    def source(self) -> str:
        return f"{self.namespace}/{self.name}"

    def container_for(self, wanted: str) -> str | None:
        """``wanted`` if set, else the default-container annotation, else the only container."""
        if wanted:
            return wanted
        if self.default_container:
            return self.default_container
        return self.containers[0] if len(self.containers) == 1 else None


def slim_pod(obj: dict[str, Any]) -> PodInfo:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = (
        status.get("phase") == "Running"
        and not meta.get("deletionTimestamp")
        and bool(statuses)
        and all(s.get("ready") for s in statuses)
    )
    return PodInfo(
        uid=meta.get("uid", ""),
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        node=spec.get("nodeName") or "",
        ready=ready,
        restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
        containers=tuple(c.get("name", "") for c in spec.get("containers") or ()),
        default_container=(meta.get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION),
        resource_version=_int_rv(meta.get("resourceVersion")),
    )


def _int_rv(value: object) -> int:
    """etcd revisions are integers; anything else is treated as unknown (0)."""
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else 0


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    machine: str | None
    annotations: tuple[tuple[str, str], ...] = ()  # only the keys the node watch was asked to keep
    owned_labels: tuple[tuple[str, str], ...] = ()  # labels under the watch's label prefix, sorted
    uid: str = ""
    gpu_capacity: int | None = None  # status.capacity of nvidia.com/gpu (or gpu.shared); None: absent
    mig_capacity: int = 0  # the sum of its nvidia.com/mig-* capacities
    gpu_labels: tuple[tuple[str, str], ...] = ()  # those of GPU_LABELS it carries

    def annotation(self, key: str) -> str:
        return next((v for k, v in self.annotations if k == key), "")

    def gpu_label(self, key: str) -> str:
        return next((v for k, v in self.gpu_labels if k == key), "")


def _count(quantity: object) -> int | None:
    """A device count from a resource quantity (``"8"``); None for anything else."""
    return int(quantity) if isinstance(quantity, str) and quantity.isascii() and quantity.isdigit() else None


def machine_of(provider_id: str | None) -> str | None:
    """``i-0abc`` from ``aws:///us-east-1a/i-0abc``: the tail of ``spec.providerID``."""
    tail = (provider_id or "").rstrip("/").rsplit("/", 1)[-1]
    return tail or None


def slim_node(obj: dict[str, Any], label_prefix: str = "", annotation_keys: Collection[str] = ()) -> NodeInfo:
    meta = obj["metadata"]
    annotations = meta.get("annotations") or {}
    all_labels = meta.get("labels") or {}
    labels = all_labels if label_prefix else {}
    head = label_prefix + "/"
    capacity = (obj.get("status") or {}).get("capacity") or {}
    advertised = [n for r in GPU_RESOURCES if (n := _count(capacity.get(r))) is not None]
    return NodeInfo(
        name=meta["name"],
        machine=machine_of((obj.get("spec") or {}).get("providerID")),
        annotations=tuple((k, annotations[k]) for k in annotation_keys if k in annotations),
        owned_labels=tuple(sorted((k, v) for k, v in labels.items() if k.startswith(head))),
        uid=meta.get("uid") or "",
        gpu_capacity=max(advertised) if advertised else None,
        mig_capacity=sum(_count(v) or 0 for k, v in capacity.items() if k.startswith(MIG_RESOURCE_PREFIX)),
        gpu_labels=tuple((k, all_labels[k]) for k in GPU_LABELS if k in all_labels),
    )
