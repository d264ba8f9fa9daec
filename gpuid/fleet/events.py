"""Kubernetes Events about a Node's GPUs (``events.k8s.io/v1``), and claiming a change by creating one.

``kubectl get events --field-selector reason=GPUReplaced`` is where an
operator looks first, so each change of a node's GPUs becomes one Event on
the Node: reasons ``GPUAdded``, ``GPURemoved``, ``GPUReplaced``,
``GPUMoved``, a note with the old and new serials, reportingController
``gpuid.io/gpuid``. Events about a cluster-scoped object must live in
``default`` (or ``kube-system``), so the RBAC stays a Role there.

Creating the Event is also how a change is *claimed*: its name is derived
from the transition (``gpuid.fleet.state.event_name``), so when a
predecessor (a crashed process, the previous leader) already created it the
API server answers 409 AlreadyExists and the change is not reported twice. A
409 whose Event carries this attempt's own claim token is a create whose
answer was lost on the way back: still ours.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gpuid.fleet.settings import EVENTS_NAMESPACE
from gpuid.fleet.state import Change
from gpuid.kube.api import call

REASONS = {"added": "GPUAdded", "removed": "GPURemoved", "replaced": "GPUReplaced", "moved": "GPUMoved"}
TYPES = {"added": "Normal", "removed": "Warning", "replaced": "Warning", "moved": "Normal"}
CONTROLLER = "gpuid.io/gpuid"
CLAIM_ANNOTATION = "gpuid.io/claim"
NOTE_LIMIT = 1024  # the API server's limit


def _gpu(uuid: str, serial: str | None) -> str:
    return f"serial {serial or 'unknown'} ({uuid})"


def note(change: Change) -> str:
    """One line an operator reads in ``kubectl get events``: what happened, old and new serials."""
    slot = change.gpu.pci_bus_id
    where = f" at PCI {slot}" if slot else ""
    old = _gpu(change.old.uuid, change.old.serial) if change.old else ""
    new = _gpu(change.new.uuid, change.new.serial) if change.new else ""
    if change.kind == "added":
        text = f"GPU added{where}: {new}"
    elif change.kind == "removed":
        text = f"GPU removed{where}: {old}"
    elif change.kind == "replaced":
        text = f"GPU replaced{where}: {old} -> {new}"
    else:
        text = f"GPU moved here from node {change.from_node}{where}: {new}"
        text += f", replacing {old}" if old else ""
    return text[:NOTE_LIMIT]


def event_body(
    name: str, change: Change, *, node: str, node_uid: str, instance: str, token: str
) -> dict[str, Any]:
    regarding = {"apiVersion": "v1", "kind": "Node", "name": node}
    if node_uid:
        regarding["uid"] = node_uid
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": name,
            "namespace": EVENTS_NAMESPACE,
            "labels": {"app.kubernetes.io/name": "gpuid"},
            "annotations": {CLAIM_ANNOTATION: token},
        },
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": CONTROLLER,
        "reportingInstance": (instance or "gpuid")[:128],
        "action": "Scan",
        "reason": REASONS[change.kind],
        "type": TYPES[change.kind],
        "regarding": regarding,
        "note": note(change),
    }


async def claim(events_api: Any, body: dict[str, Any]) -> bool:
    """Create the Event: True when this attempt created it, False when a predecessor did.

    Raises ``ApiError`` when it cannot be told (the API server is unreachable, RBAC forbids it).
    """
    name = body["metadata"]["name"]
    created = await call(
        events_api.create_namespaced_event,
        EVENTS_NAMESPACE,
        body,
        what=f"create event {name}",
        absent=(409,),
    )
    if created is not None:
        return True
    existing = await call(
        events_api.read_namespaced_event, name, EVENTS_NAMESPACE, what=f"read event {name}", absent=(404,)
    )
    if existing is None:  # it expired between the two calls: a predecessor had it
        return False
    token = ((existing.get("metadata") or {}).get("annotations") or {}).get(CLAIM_ANNOTATION)
    return bool(token) and token == body["metadata"]["annotations"][CLAIM_ANNOTATION]
