"""Pod and Node objects shaped like the real API server's JSON.

The sim stores plain dicts rather than kubernetes_asyncio models so the wire
format is exactly what the tests see. The shapes here carry every field the
client's models require (``V1ContainerStatus`` refuses to deserialise without
``image`` and ``imageID``, for example) and the ones gpuid reads: labels,
``spec.nodeName``, readiness, restart counts and ``spec.providerID``.
Functions that change a pod take a private copy, so events already in the
history never change under a watcher.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence

from gpuid.sim.events import Obj, clone

DEVICE_PLUGIN_LABELS: Mapping[str, str] = {"app": "nvidia-device-plugin-daemonset"}
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"


def now() -> str:
    """RFC 3339 UTC timestamp at second precision, as Kubernetes writes them."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def default_provider_id(node_name: str) -> str:
    """An AWS-style providerID whose instance id is derived from the node name (stable across runs)."""
    digest = hashlib.sha256(node_name.encode()).hexdigest()
    return f"aws:///us-east-1a/i-0{digest[:16]}"


NODE_RESOURCES: Mapping[str, str] = {"cpu": "96", "memory": "2113459276Ki", "pods": "110"}


def new_node(
    name: str, *, provider_id: str, labels: Mapping[str, str], capacity: Mapping[str, str] | None = None
) -> Obj:
    """A Ready node; ``capacity`` (e.g. ``nvidia.com/gpu``) is added to its CPU, memory and pods."""
    resources = {**NODE_RESOURCES, **(capacity or {})}
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid4()),
            "labels": {"kubernetes.io/hostname": name, **labels},
            "creationTimestamp": now(),
        },
        "spec": {"providerID": provider_id},
        "status": {
            "capacity": resources,
            "allocatable": dict(resources),
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def merge_into(target: Obj, changes: Mapping[str, str | None] | None) -> None:
    """Set each key of ``changes`` in ``target``; None removes it."""
    for key, value in (changes or {}).items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


@functools.cache
def _image_id(image: str) -> str:
    return f"{image.partition(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _container_status(name: str, image: str, *, ready: bool, running: bool) -> Obj:
    state: Obj = (
        {"running": {"startedAt": now()}} if running else {"waiting": {"reason": "ContainerCreating"}}
    )
    return {
        "name": name,
        "image": image,
        "imageID": _image_id(image),
        "ready": ready,
        "started": running,
        "restartCount": 0,
        "state": state,
    }


def new_pod(
    name: str,
    *,
    namespace: str,
    node: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    containers: Sequence[str],
    ready: bool,
    phase: str,
) -> Obj:
    running = phase == "Running"
    images = {
        c: DEVICE_PLUGIN_IMAGE if c == "nvidia-device-plugin" else f"registry.local/{c}:latest"
        for c in containers
    }
    pod: Obj = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "labels": dict(labels),
            "annotations": dict(annotations),
            "creationTimestamp": now(),
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Always",
            "containers": [{"name": c, "image": images[c]} for c in containers],
        },
        "status": {
            "phase": phase,
            "conditions": [],
            "containerStatuses": [
                _container_status(c, images[c], ready=ready and running, running=running) for c in containers
            ],
        },
    }
    if running:
        pod["status"]["startTime"] = pod["metadata"]["creationTimestamp"]
    return _set_readiness(pod, ready and running)


def with_readiness(pod: Obj, ready: bool, containers: Sequence[str] | None = None) -> Obj:
    """A copy of ``pod`` whose named containers (default: all) and Ready condition reflect ``ready``."""
    return _set_readiness(clone(pod), ready, containers)


def _set_readiness(pod: Obj, ready: bool, containers: Sequence[str] | None = None) -> Obj:
    status = pod["status"]
    if ready and status["phase"] == "Pending":
        status["phase"] = "Running"
        status["startTime"] = now()
        for cs in status["containerStatuses"]:
            cs["state"], cs["started"] = {"running": {"startedAt": now()}}, True
    for cs in status["containerStatuses"]:
        if containers is None or cs["name"] in containers:
            cs["ready"] = ready
    all_ready = status["phase"] == "Running" and all(cs["ready"] for cs in status["containerStatuses"])
    flag = "True" if all_ready else "False"
    status["conditions"] = [
        {"type": "Initialized", "status": "True"},
        {"type": "Ready", "status": flag, "lastTransitionTime": now()},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": now()},
        {"type": "PodScheduled", "status": "True"},
    ]
    return pod


def with_restart(pod: Obj, container: str) -> Obj:
    """A copy of ``pod`` in which ``container`` has restarted once more (and is not ready yet)."""
    pod = with_readiness(pod, False, [container])
    for cs in pod["status"]["containerStatuses"]:
        if cs["name"] == container:
            cs["restartCount"] += 1
            cs["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": now()}}
            cs["state"] = {"running": {"startedAt": now()}}
    return pod
