"""``events.k8s.io/v1`` Events: create, get and list, validated as the API server validates them.

gpuid reports a change of a node's GPUs as an Event on the Node, and claims
the change by creating the Event under a name derived from it (a second
create answers 409 AlreadyExists). So the sim answers exactly that: POST
with the strict validation ``events.k8s.io/v1`` applies to new Events
(``eventTime``, ``type``, ``reportingController`` as a qualified name,
``reportingInstance``, ``action``, ``reason`` and their length limits, a
1 KiB ``note``, no ``deprecated*`` fields, and an Event about a
cluster-scoped object only in ``default`` or ``kube-system``), 409 for a name
that exists, GET by name, and list with the field selectors the real server
supports for events (``reason``, ``type``, ``regarding.*`` …). Tests read
what was created with ``SimCluster.events``.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from gpuid.sim import objects, wire
from gpuid.sim.cluster import SimCluster
from gpuid.sim.events import Obj, dump
from gpuid.sim.filters import ObjectFilter, SelectorError
from gpuid.sim.nodepatch import label_key_error

API_VERSION = "events.k8s.io/v1"
RESOURCE = "events"
LIMITS = {"reportingInstance": 128, "action": 128, "reason": 128, "note": 1024}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DEPRECATED = ("deprecatedSource", "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount")


def problems(event: Obj, namespace: str) -> list[str]:
    """What the API server's create validation finds wrong with ``event`` (empty: valid)."""
    found: list[str] = []
    name = event["metadata"].get("name") or ""
    if not name and not event["metadata"].get("generateName"):
        found.append("metadata.name: Required value: name or generateName is required")
    elif name and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        found.append(
            f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of'
            " lower case alphanumeric characters, '-' or '.'"
        )
    if not event.get("eventTime"):
        found.append("eventTime: Required value")
    if event.get("type") not in ("Normal", "Warning"):
        found.append(f'type: Invalid value: "": has invalid value: {event.get("type") or ""}')
    found.extend(
        f'{field}: Invalid value: "": needs to be unset' for field in _DEPRECATED if event.get(field)
    )
    series = event.get("series")
    if series is not None and (not isinstance(series, dict) or int(series.get("count") or 0) < 2):
        found.append('series.count: Invalid value: "": should be at least 2')
    regarding = event.get("regarding") or {}
    if not regarding.get("namespace") and namespace not in ("default", "kube-system"):
        found.append('involvedObject.namespace: Invalid value: "": does not match event.namespace')
    controller = event.get("reportingController") or ""
    if not controller:
        found.append("reportingController: Required value")
    elif why := label_key_error(controller):
        found.append(f'reportingController: Invalid value: "{controller}": {why}')
    for field, limit in LIMITS.items():
        value = event.get(field) or ""
        if not value and field != "note":
            found.append(f"{field}: Required value")
        elif len(value) > limit:
            found.append(f'{field}: Invalid value: "": can have at most {limit} characters')
    return found


def _invalid(name: str, found: list[str]) -> web.Response:
    detail = found[0] if len(found) == 1 else "[" + ", ".join(found) + "]"
    return wire.status_response(422, f'Event.events.k8s.io "{name}" is invalid: {detail}')


async def create_event(request: web.Request, cluster: SimCluster) -> web.Response:
    """POST: 201 with the stored Event, 400/422 for a bad one, 409 AlreadyExists."""
    namespace = request.match_info["namespace"]
    try:
        event = json.loads(await request.read())
    except ValueError as e:
        return wire.status_response(400, f"error decoding the request body: {e}")
    if not isinstance(event, dict) or not isinstance(event.get("metadata"), dict):
        return wire.status_response(400, "the request body must be an Event object with metadata")
    meta = event["metadata"]
    if meta.get("namespace", namespace) != namespace:
        message = "the namespace of the provided object does not match the namespace sent on the request"
        return wire.status_response(400, message)
    if found := problems(event, namespace):
        return _invalid(meta.get("name") or meta.get("generateName") or "", found)
    name = meta.get("name") or meta["generateName"] + uuid.uuid4().hex[:5]
    if cluster.current(RESOURCE, namespace, name) is not None:
        return wire.status_response(409, f'events.events.k8s.io "{name}" already exists', "AlreadyExists")
    stored = {
        **event,
        "kind": "Event",
        "apiVersion": API_VERSION,
        "metadata": {
            **meta,
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "creationTimestamp": objects.now(),
        },
    }
    cluster.create_object(RESOURCE, namespace, name, stored)
    current = cluster.current(RESOURCE, namespace, name)
    assert current is not None
    return web.Response(status=201, body=current.object_json(), content_type=wire.JSON)


async def get_event(request: web.Request, cluster: SimCluster) -> web.Response:
    name = request.match_info["name"]
    current = cluster.current(RESOURCE, request.match_info["namespace"], name)
    if current is None:
        return wire.status_response(404, f'events.events.k8s.io "{name}" not found')
    return web.Response(body=current.object_json(), content_type=wire.JSON)


async def list_events(request: web.Request, cluster: SimCluster) -> web.Response:
    try:
        flt = ObjectFilter.parse(
            RESOURCE,
            request.match_info["namespace"],
            request.query.get("labelSelector", ""),
            request.query.get("fieldSelector", ""),
        )
    except SelectorError as e:
        return wire.status_response(400, str(e))
    items = cluster.select(RESOURCE, flt)
    meta = dump({"resourceVersion": str(cluster.resource_version)})
    body = b'{"kind":"EventList","apiVersion":"' + API_VERSION.encode() + b'","metadata":' + meta
    body += b',"items":[' + b",".join(ev.object_json() for ev in items) + b"]}"
    return web.Response(body=body, content_type=wire.JSON)


def add_routes(app: web.Application, cluster: SimCluster) -> None:
    """Register the Event routes (``"create event"``, ``"get event"``… in request counts)."""
    base = "/apis/events.k8s.io/v1/namespaces/{namespace}/events"

    def bind(handler: Any) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request, cluster)
            return response

        return handle

    app.router.add_route("POST", base, bind(create_event), name="create.event")
    app.router.add_route("GET", base, bind(list_events), name="list.events")
    app.router.add_route("GET", base + "/{name}", bind(get_event), name="get.event")
