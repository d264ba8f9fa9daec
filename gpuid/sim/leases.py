"""``coordination.k8s.io/v1`` Leases: what gpuid's leader election talks to.

Two gpuid replicas must never scan at once, and that guarantee rests on the
API server's optimistic concurrency: an update carrying a resourceVersion
that is no longer current fails with 409 Conflict, so of two replicas racing
for an expired lease exactly one wins. The sim serves get, create (POST),
update (PUT) and delete of a Lease in a namespace with those semantics, the
validation the real server applies to a Lease (name and namespace match the
URL, ``leaseDurationSeconds`` and ``leaseTransitions`` sane), and the same
Status bodies (404 NotFound, 409 AlreadyExists/Conflict, 422 Invalid).
Leases share the cluster-wide resourceVersion with pods and nodes, as in etcd.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from gpuid.sim import objects, wire
from gpuid.sim.cluster import SimCluster
from gpuid.sim.events import Obj

API_VERSION = "coordination.k8s.io/v1"
RESOURCE = "leases"
LeaseHandler = Callable[[web.Request, SimCluster], Awaitable[web.Response]]


def _conflict(name: str) -> web.Response:
    message = (
        f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    return wire.status_response(409, message, "Conflict")


def _not_found(name: str) -> web.Response:
    return wire.status_response(404, f'leases.coordination.k8s.io "{name}" not found')


def _invalid(name: str, problem: str) -> web.Response:
    return wire.status_response(422, f'Lease.coordination.k8s.io "{name}" is invalid: {problem}')


def _validate(body: Any, namespace: str, name: str | None) -> tuple[Obj, str] | web.Response:
    """The lease in ``body`` and its name, or the error response the API server would send."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
        return wire.status_response(400, "the request body must be a Lease object with metadata")
    meta = body["metadata"]
    lease_name = meta.get("name") or name or ""
    if not lease_name:
        return _invalid("", "metadata.name: Required value: name or generateName is required")
    if name is not None and lease_name != name:
        message = f"the name of the object ({lease_name}) does not match the name on the URL ({name})"
        return wire.status_response(400, message)
    if meta.get("namespace", namespace) != namespace:
        message = "the namespace of the provided object does not match the namespace sent on the request"
        return wire.status_response(400, message)
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        return _invalid(lease_name, "spec: must be an object")
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        return _invalid(lease_name, f"spec.leaseDurationSeconds: Invalid value: {duration}: must be > 0")
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
        message = f"spec.leaseTransitions: Invalid value: {transitions}: must be >= 0"
        return _invalid(lease_name, message)
    return body, lease_name


async def _read_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError:
        return None


def _stored_response(cluster: SimCluster, namespace: str, name: str, status: int = 200) -> web.Response:
    stored = cluster.current(RESOURCE, namespace, name)
    if stored is None:
        return _not_found(name)
    return web.Response(status=status, body=stored.object_json(), content_type=wire.JSON)


async def get_lease(request: web.Request, cluster: SimCluster) -> web.Response:
    return _stored_response(cluster, request.match_info["namespace"], request.match_info["name"])


async def create_lease(request: web.Request, cluster: SimCluster) -> web.Response:
    """POST: 201 with the stored lease, or 409 AlreadyExists."""
    namespace = request.match_info["namespace"]
    checked = _validate(await _read_body(request), namespace, None)
    if isinstance(checked, web.Response):
        return checked
    body, name = checked
    if cluster.current(RESOURCE, namespace, name) is not None:
        message = f'leases.coordination.k8s.io "{name}" already exists'
        return wire.status_response(409, message, "AlreadyExists")
    lease = _lease(body, namespace, name, uid=str(uuid.uuid4()), creationTimestamp=objects.now())
    cluster.create_object(RESOURCE, namespace, name, lease)
    return _stored_response(cluster, namespace, name, status=201)


def _lease(body: Obj, namespace: str, name: str, **kept: str) -> Obj:
    """The stored Lease: the client's metadata and spec, with what the server owns laid over."""
    meta = {**body["metadata"], "name": name, "namespace": namespace, **kept}
    return {
        "kind": "Lease",
        "apiVersion": API_VERSION,
        "metadata": meta,
        "spec": dict(body.get("spec") or {}),
    }


async def update_lease(request: web.Request, cluster: SimCluster) -> web.Response:
    """PUT: replace the spec; 409 Conflict when ``metadata.resourceVersion`` is stale."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    checked = _validate(await _read_body(request), namespace, name)
    if isinstance(checked, web.Response):
        return checked
    body, _ = checked
    current = cluster.current(RESOURCE, namespace, name)
    if current is None:
        return _not_found(name)
    meta = current.obj["metadata"]
    wanted_rv = body["metadata"].get("resourceVersion")
    if wanted_rv and wanted_rv != meta["resourceVersion"]:
        return _conflict(name)
    if body["metadata"].get("uid") not in (None, meta["uid"]):
        return _conflict(name)
    lease = _lease(
        body,
        namespace,
        name,
        uid=meta["uid"],
        creationTimestamp=meta["creationTimestamp"],
        resourceVersion=meta["resourceVersion"],
    )
    if lease != current.obj:
        cluster.replace_object(RESOURCE, namespace, name, lease)
    return _stored_response(cluster, namespace, name)


async def delete_lease(request: web.Request, cluster: SimCluster) -> web.Response:
    """DELETE: a Success Status, or 404."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    current = cluster.current(RESOURCE, namespace, name)
    if current is None:
        return _not_found(name)
    uid = current.obj["metadata"]["uid"]
    cluster.delete_object(RESOURCE, namespace, name)
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": "coordination.k8s.io", "kind": "leases", "uid": uid},
    }
    return web.json_response(status)


def add_routes(app: web.Application, cluster: SimCluster) -> None:
    """Register the lease routes (``"get lease"``, ``"create lease"``… in ``request_counts``)."""
    base = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    route = app.router.add_route

    def bind(handler: LeaseHandler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await handler(request, cluster)

        return handle

    route("POST", base, bind(create_lease), name="create.lease")
    route("GET", base + "/{name}", bind(get_lease), name="get.lease")
    route("PUT", base + "/{name}", bind(update_lease), name="update.lease")
    route("DELETE", base + "/{name}", bind(delete_lease), name="delete.lease")
