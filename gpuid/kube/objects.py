"""What gpuid keeps of pods and nodes: a few fields, not the whole object.

Watch events carry full objects (kilobytes each); at 10,000 pods keeping them
would dominate memory. ``PodInfo``/``NodeInfo`` hold what scanning, records
and the features need: a node keeps only the annotations and labels its
watch was asked for (``annotation_keys``, ``label_prefix``), so the kube layer
needs to know nothing of bug reports or node labels.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


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

    def annotation(self, key: str) -> str:
        return next((v for k, v in self.annotations if k == key), "")


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


def slim_node(obj: dict[str, Any], label_prefix: str = "", annotation_keys: Collection[str] = ()) -> NodeInfo:
    meta = obj["metadata"]
    annotations = meta.get("annotations") or {}
    labels = (meta.get("labels") or {}) if label_prefix else {}
    head = label_prefix + "/"
    return NodeInfo(
        name=meta["name"],
        machine=machine_of((obj.get("spec") or {}).get("providerID")),
        annotations=tuple((k, annotations[k]) for k in annotation_keys if k in annotations),
        owned_labels=tuple(sorted((k, v) for k, v in labels.items() if k.startswith(head))),
    )
