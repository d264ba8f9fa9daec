"""The simulated cluster's state: nodes, pods and the history of their changes.

Tests drive a scenario with plain synchronous calls (add a pod, make it ready,
restart it, delete it) while the API server runs in the same loop; each call
is resourceVersion bumps recorded as watch events and pushed to open watches.
Objects are never changed in place, so the history a watcher replays is
exactly what happened; an index by node keeps large clusters cheap.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

from gpuid.sim import objects
from gpuid.sim.captures import Capture, bundled_capture
from gpuid.sim.events import EventLog, Obj, WatchEvent, clone
from gpuid.sim.faults import FaultControls
from gpuid.sim.filters import ObjectFilter
from gpuid.sim.hardware import NodeHardware
from gpuid.sim.podfs import PodFiles

Key = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped objects
DEFAULT_NAMESPACE = "gpu-operator"


class SimCluster(FaultControls, NodeHardware):
    """Nodes and pods as JSON-like dicts with a cluster-wide resourceVersion."""

    def __init__(self, *, max_events: int = 100_000) -> None:
        super().__init__()
        self._log = EventLog(first_rv=1, max_events=max_events)
        self._store: dict[str, dict[Key, WatchEvent]] = {"pods": {}, "nodes": {}}  # by URL plural
        self._sorted: dict[str, list[Key] | None] = {}
        self._pods_by_node: dict[str, dict[Key, None]] = {}
        self._node_capture: dict[str, str | None] = {}
        self._captures: dict[str, Capture] = {}
        self.pod_files = PodFiles()  # files inside pods (bug reports), on the host disk

    # -- captures ---------------------------------------------------------------------------------
    def add_capture(self, name: str, xml: bytes, listing: bytes | None = None) -> None:
        """Register nvidia-smi output under ``name`` for ``add_node(capture=name)``."""
        self._captures[name] = Capture.from_xml(name, xml, listing)

    def capture(self, name: str) -> Capture:
        """A registered capture, else a bundled one; KeyError if neither exists."""
        return self._captures.get(name) or bundled_capture(name)

    def capture_for_node(self, node: str) -> Capture | None:
        name = self._node_capture.get(node)
        return None if name is None else self.capture(name)

    # -- nodes ------------------------------------------------------------------------------------
    def add_node(
        self,
        name: str,
        *,
        capture: str | None = "gpuid-h100-sxm-x8",
        provider_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        capacity: Mapping[str, str] | None = None,
    ) -> Obj:
        """Add a node whose pods' nvidia-smi replays ``capture`` (None: a node without a driver).

        Like the device plugin, a node with a capture advertises its GPUs as
        ``nvidia.com/gpu`` capacity; ``capacity`` adds to or overrides that.
        """
        node_labels, resources = dict(labels or {}), {}
        if capture is not None:
            gpus = self.capture(capture).gpu_uuids()  # fail now, not at exec time
            node_labels.setdefault("nvidia.com/gpu.present", "true")
            resources["nvidia.com/gpu"] = str(len(gpus))
        node = objects.new_node(
            name,
            provider_id=provider_id or objects.default_provider_id(name),
            labels=node_labels,
            capacity={**resources, **(capacity or {})},
        )
        stored = self._add("nodes", ("", name), node)
        self._node_capture[name] = capture
        return stored

    def node(self, name: str) -> Obj:
        return clone(self._current("nodes", ("", name)).obj)

    def delete_node(self, name: str) -> None:
        self._delete("nodes", ("", name))
        self._node_capture.pop(name, None)

    # -- pods -------------------------------------------------------------------------------------
    def add_pod(
        self,
        name: str,
        *,
        node: str,
        namespace: str = DEFAULT_NAMESPACE,
        labels: Mapping[str, str] | None = None,
        containers: Sequence[str] = ("nvidia-device-plugin",),
        ready: bool = True,
        phase: str = "Running",
        annotations: Mapping[str, str] | None = None,
    ) -> Obj:
        """Add a pod bound to ``node`` (one ADDED event); returns a copy of the stored object.

        ``node`` need not exist; nvidia-smi in such a pod fails as on a node without a driver.
        """
        if not containers:
            raise ValueError("a pod needs at least one container")
        pod = objects.new_pod(
            name,
            namespace=namespace,
            node=node,
            labels=objects.DEVICE_PLUGIN_LABELS if labels is None else labels,
            annotations=annotations or {},
            containers=containers,
            ready=ready,
            phase=phase,
        )
        key = (namespace, name)
        stored = self._add("pods", key, pod)
        self._pods_by_node.setdefault(node, {})[key] = None
        return stored

    def pod(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> Obj:
        return clone(self._current("pods", (namespace, name)).obj)

    def set_ready(self, name: str, ready: bool, namespace: str = DEFAULT_NAMESPACE) -> Obj:
        """Flip every container's readiness (a Pending pod starts Running when made ready)."""
        key = (namespace, name)
        return self._modify("pods", key, objects.with_readiness(self._current("pods", key).obj, ready))

    def restart_container(
        self, name: str, container: str | None = None, namespace: str = DEFAULT_NAMESPACE
    ) -> Obj:
        """Restart one container (default: the first): restartCount+1, not ready, then ready again."""
        key = (namespace, name)
        pod = self._current("pods", key).obj
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = container or names[0]
        if container not in names:
            raise KeyError(f"container {container!r} is not in pod {namespace}/{name}")
        self._modify("pods", key, objects.with_restart(pod, container))
        return self._modify("pods", key, objects.with_readiness(self._current("pods", key).obj, True))

    def label_pod(
        self, name: str, labels: Mapping[str, str | None], namespace: str = DEFAULT_NAMESPACE
    ) -> Obj:
        """Merge ``labels`` into the pod's labels (None removes a key): one MODIFIED event."""
        key = (namespace, name)
        pod = clone(self._current("pods", key).obj)
        merged = {**pod["metadata"].get("labels", {}), **labels}
        pod["metadata"]["labels"] = {k: v for k, v in merged.items() if v is not None}
        return self._modify("pods", key, pod)

    def delete_pod(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        key = (namespace, name)
        node = self._current("pods", key).obj["spec"]["nodeName"]
        self._delete("pods", key)
        self._pods_by_node.get(node, {}).pop(key, None)

    # -- writes for the API server (node PATCH, leases) ------------------------------------------
    def create_object(self, resource: str, namespace: str, name: str, obj: Obj) -> Obj:
        """Store a new object (one ADDED event); ValueError if it exists. Returns a copy."""
        self._store.setdefault(resource, {})
        return self._add(resource, (namespace, name), obj)

    def replace_object(self, resource: str, namespace: str, name: str, obj: Obj) -> Obj:
        """Store ``obj`` as the new state of an existing object (one MODIFIED event); returns a copy."""
        return self._modify(resource, (namespace, name), obj)

    def delete_object(self, resource: str, namespace: str, name: str) -> None:
        """Remove an object that is not a pod or node (those have their own bookkeeping)."""
        if resource in ("pods", "nodes"):
            raise ValueError(f"use delete_pod/delete_node for {resource}")
        self._delete(resource, (namespace, name))

    def events(self, namespace: str = "default", reason: str | None = None) -> list[Obj]:
        """The Events created in ``namespace`` (only those with ``reason``), oldest first."""
        found = [e.obj for (ns, _), e in self._store.get("events", {}).items() if ns == namespace]
        return [clone(e) for e in found if reason is None or e.get("reason") == reason]

    # -- reads for the API server ---------------------------------------------------------------
    @property
    def log(self) -> EventLog:
        return self._log

    @property
    def resource_version(self) -> int:
        return self._log.head

    def current(self, resource: str, namespace: str, name: str) -> WatchEvent | None:
        """The event holding the object's current state (its cached JSON), or None."""
        return self._store.get(resource, {}).get((namespace, name))

    def select(self, resource: str, flt: ObjectFilter, after: Key | None = None) -> list[WatchEvent]:
        """Current objects matching ``flt``, in key order (namespace, name), optionally after a key."""
        store = self._store.get(resource, {})
        name = flt.equality("metadata.name")
        node_name = flt.equality("spec.nodeName") if resource == "pods" else None
        keys: list[Key]
        if name is not None and flt.namespace is not None:
            keys = [(flt.namespace, name)]
        elif node_name is not None:
            keys = sorted(self._pods_by_node.get(node_name, {}))
        else:
            keys = self._sorted_keys(resource)
        if after is not None:
            keys = keys[bisect.bisect_right(keys, after) :]
        return [ev for k in keys if (ev := store.get(k)) is not None and flt.matches(ev.obj)]

    # -- the one place state changes --------------------------------------------------------------
    def _sorted_keys(self, resource: str) -> list[Key]:
        keys = self._sorted.get(resource)
        if keys is None:
            keys = self._sorted[resource] = sorted(self._store.get(resource, {}))
        return keys

    def _current(self, resource: str, key: Key) -> WatchEvent:
        event = self._store[resource].get(key)
        if event is None:
            raise KeyError(f'{resource} "{key[1]}" not found' + (f" in {key[0]}" if key[0] else ""))
        return event

    def _commit(self, resource: str, type_: str, obj: Obj, prev: Obj | None) -> WatchEvent:
        rv = self._log.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        event = WatchEvent(rv=rv, type=type_, resource=resource, obj=obj, prev=prev)
        self._log.append(event)  # wakes the watchers
        return event

    def _add(self, resource: str, key: Key, obj: Obj) -> Obj:
        if key in self._store[resource]:
            raise ValueError(f'{resource} "{key[1]}" already exists')
        self._store[resource][key] = self._commit(resource, "ADDED", obj, None)
        if (keys := self._sorted.get(resource)) is not None:
            bisect.insort(keys, key)
        return clone(obj)

    def _modify(self, resource: str, key: Key, new: Obj) -> Obj:
        prev = self._current(resource, key).obj
        self._store[resource][key] = self._commit(resource, "MODIFIED", new, prev)
        return clone(new)

    def _delete(self, resource: str, key: Key) -> None:
        gone = clone(self._current(resource, key).obj)
        gone["metadata"]["deletionTimestamp"] = objects.now()
        self._commit(resource, "DELETED", gone, None)
        del self._store[resource][key]
        if (keys := self._sorted.get(resource)) is not None:
            del keys[bisect.bisect_left(keys, key)]
