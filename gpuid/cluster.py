"""What gpuid keeps of pods and nodes: a few fields, not the whole object.

Watch events carry full objects (kilobytes each); at 10,000 pods keeping them
would dominate memory. ``PodInfo``/``NodeInfo`` hold what scanning and records
need, and ``NodeDirectory`` answers "which machine is this node" from a node
watch, so no scan ever costs a node GET.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gpuid.errors import ApiError
from gpuid.metrics import Metrics
from gpuid.watch import Informer, ListFn

log = structlog.get_logger("gpuid.cluster")
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
BUG_REPORT_REQUEST = "gpuid.io/bug-report-request"
BUG_REPORT_STATUS = "gpuid.io/bug-report-status"


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
    return int(value) if isinstance(value, str) and value.isdigit() else 0


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    machine: str | None
    bug_report_request: str = ""  # the BUG_REPORT_REQUEST annotation (gpuid.bugreport)
    bug_report_status: str = ""  # the BUG_REPORT_STATUS annotation
    owned_labels: tuple[tuple[str, str], ...] = ()  # labels under LABEL_PREFIX (gpuid.labels), sorted


def machine_of(provider_id: str | None) -> str | None:
    """``i-0abc`` from ``aws:///us-east-1a/i-0abc``: the tail of ``spec.providerID``."""
    tail = (provider_id or "").rstrip("/").rsplit("/", 1)[-1]
    return tail or None


def slim_node(obj: dict[str, Any], label_prefix: str = "") -> NodeInfo:
    annotations = obj["metadata"].get("annotations") or {}
    labels = (obj["metadata"].get("labels") or {}) if label_prefix else {}
    head = label_prefix + "/"
    return NodeInfo(
        name=obj["metadata"]["name"],
        machine=machine_of((obj.get("spec") or {}).get("providerID")),
        bug_report_request=annotations.get(BUG_REPORT_REQUEST, ""),
        bug_report_status=annotations.get(BUG_REPORT_STATUS, ""),
        owned_labels=tuple(sorted((k, v) for k, v in labels.items() if k.startswith(head))),
    )


class NodeDirectory:
    """Node name → machine, kept current by a node watch; ``None`` when nodes are unreadable."""

    def __init__(
        self, list_nodes: ListFn, metrics: Metrics, node_name: str = "", label_prefix: str = ""
    ) -> None:
        self._machines: dict[str, str | None] = {}
        selector = f"metadata.name={node_name}" if node_name else ""
        slim = functools.partial(slim_node, label_prefix=label_prefix)  # keep labels only if asked
        self.informer = Informer("node", list_nodes, slim, self._on_event, metrics, field_selector=selector)
        self.readable = True
        self.listeners: list[Callable[[str, NodeInfo], None]] = []  # e.g. bug-report requests

    def _on_event(self, kind: str, node: NodeInfo) -> None:
        if kind == "DELETED":
            self._machines.pop(node.name, None)
        else:
            self._machines[node.name] = node.machine
        for listener in self.listeners:
            listener(kind, node)

    def machine(self, node: str) -> str | None:
        return self._machines.get(node)

    async def run(self) -> None:
        try:
            await self.informer.run()
        except ApiError as e:
            self.readable = False
            self.informer.synced.set()
            log.error("nodes are not readable; records will have machine=null", error=str(e))
