"""What gpuid keeps of pods and nodes: a few fields, not the whole object.

Watch events carry full objects (kilobytes each); at 10,000 pods keeping them
would dominate memory. ``PodInfo``/``NodeInfo`` hold what scanning, records
and the features need: a node keeps only the annotations and labels its
watch was asked for (``annotation_keys``, ``label_prefix``), so the kube layer
needs to know nothing of bug reports or node labels. A node also keeps what
it advertises of GPUs: its ``nvidia.com/gpu`` capacity, its MIG capacity and
the few GPU Feature Discovery labels that say how GPUs are shared
(``gpuid.fleet.expected`` turns them into the GPUs a node should have). Both
readers are total: the API server's JSON is trusted for its shape nowhere, so
an object with a field of the wrong type yields a record with that field
absent, never a crash.
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


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def slim_pod(obj: object) -> PodInfo:
    """What gpuid keeps of a pod; any JSON shape is accepted (a wrong field reads as absent)."""
    obj = _dict(obj)
    meta, spec, status = _dict(obj.get("metadata")), _dict(obj.get("spec")), _dict(obj.get("status"))
    statuses = [_dict(s) for s in _list(status.get("containerStatuses"))]
    ready = (
        status.get("phase") == "Running"
        and not meta.get("deletionTimestamp")
        and bool(statuses)
        and all(s.get("ready") is True for s in statuses)
    )
    return PodInfo(
        uid=_str(meta.get("uid")),
        name=_str(meta.get("name")),
        namespace=_str(meta.get("namespace")),
        node=_str(spec.get("nodeName")),
        ready=ready,
        restarts=sum(_count(s.get("restartCount")) for s in statuses),
        containers=tuple(_str(_dict(c).get("name")) for c in _list(spec.get("containers"))),
        default_container=_str(_dict(meta.get("annotations")).get(DEFAULT_CONTAINER_ANNOTATION)) or None,
        resource_version=_int_rv(meta.get("resourceVersion")),
    )


def _count(value: object) -> int:
    """A non-negative int32 count (restartCount); anything else counts 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31 else 0


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


def _quantity(quantity: object) -> int | None:
    """A device count from a resource quantity (``"8"``); None for anything else."""
    return int(quantity) if isinstance(quantity, str) and quantity.isascii() and quantity.isdigit() else None


def machine_of(provider_id: str | None) -> str | None:
    """The VM behind a node, from ``spec.providerID``: its last segment (``i-0abc`` on AWS).

    An Azure scale-set VM ends in ``virtualMachineScaleSets/<set>/virtualMachines/<n>``,
    whose ``<n>`` repeats in every node pool: its machine is ``<set>/<n>``.
    """
    parts = (provider_id or "").rstrip("/").split("/")
    if (
        len(parts) >= 4
        and parts[-2].lower() == "virtualmachines"
        and parts[-4].lower() == "virtualmachinescalesets"
    ):
        return f"{parts[-3]}/{parts[-1]}"
    return parts[-1] or None


def slim_node(obj: object, label_prefix: str = "", annotation_keys: Collection[str] = ()) -> NodeInfo:
    """What gpuid keeps of a node; any JSON shape is accepted (a wrong field reads as absent)."""
    obj = _dict(obj)
    meta = _dict(obj.get("metadata"))
    annotations = _dict(meta.get("annotations"))
    all_labels = _dict(meta.get("labels"))
    labels = all_labels if label_prefix else {}
    head = label_prefix + "/"
    capacity = _dict(_dict(obj.get("status")).get("capacity"))
    advertised = [n for r in GPU_RESOURCES if (n := _quantity(capacity.get(r))) is not None]
    return NodeInfo(
        name=_str(meta.get("name")),
        machine=machine_of(_str(_dict(obj.get("spec")).get("providerID"))),
        annotations=tuple((k, v) for k in annotation_keys if isinstance(v := annotations.get(k), str)),
        owned_labels=tuple(
            sorted((k, v) for k, v in labels.items() if k.startswith(head) and isinstance(v, str))
        ),
        uid=_str(meta.get("uid")),
        gpu_capacity=max(advertised) if advertised else None,
        mig_capacity=sum(_quantity(v) or 0 for k, v in capacity.items() if k.startswith(MIG_RESOURCE_PREFIX)),
        gpu_labels=tuple((k, v) for k in GPU_LABELS if isinstance(v := all_labels.get(k), str)),
    )
