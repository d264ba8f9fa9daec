"""``PATCH /api/v1/nodes/{name}``: how gpuid writes node labels and annotations.

Node labels (and the bug-report annotations) are written with a merge patch,
so the sim answers PATCH the way the API server does for the parts gpuid
touches: JSON merge patch (RFC 7386) and strategic merge patch (identical for
maps such as ``metadata.labels``; ``null`` deletes a key), a 409 Conflict
when the patch carries a stale ``metadata.resourceVersion``, a 422 Invalid
for label or annotation keys and values the real server refuses, a 404
Status for a missing node, and no write (no new resourceVersion, no watch
event) when the patch changes nothing. kubernetes_asyncio's
``CoreV1Api.patch_node(name, dict)`` sends
``application/strategic-merge-patch+json``. Strategic-merge list semantics
(merge keys, ``$patch`` directives) are not simulated: such patches get 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from gpuid.sim import wire
from gpuid.sim.cluster import SimCluster
from gpuid.sim.events import Obj, clone

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IMMUTABLE = ("name", "uid", "creationTimestamp")


class PatchRejectedError(Exception):
    """A patch the API server refuses; carries the HTTP status and the Status message."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    def response(self) -> web.Response:
        return wire.status_response(self.status, str(self), self.reason)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _check_strategic(patch: Any, path: str = "") -> None:
    if isinstance(patch, list):
        raise PatchRejectedError(400, f"gpuid.sim does not simulate strategic merge of lists ({path or '.'})")
    if isinstance(patch, dict):
        for key, value in patch.items():
            if key.startswith("$"):
                raise PatchRejectedError(400, f"gpuid.sim does not simulate the {key} directive")
            _check_strategic(value, f"{path}.{key}")


def label_key_error(key: str) -> str | None:
    """Why ``key`` is not a valid label/annotation key, or None (``[prefix/]name``)."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if len(name) > 63 or not _NAME.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character (at most 63 characters)"
        )
    return None


def label_value_error(value: object) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    if not isinstance(value, str):
        return "must be a string"
    if value and (len(value) > 63 or not _NAME.match(value)):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character (at most 63 characters)"
        )
    return None


def _validate_metadata(name: str, meta: Obj) -> None:
    problems: list[str] = []
    for field in ("labels", "annotations"):
        mapping = meta.get(field) or {}
        if not isinstance(mapping, dict):
            problems.append(f"metadata.{field}: must be a map")
            continue
        for key, value in mapping.items():
            if why := label_key_error(key):
                problems.append(f'metadata.{field}: Invalid value: "{key}": {why}')
            if field == "labels" and (why := label_value_error(value)):
                problems.append(f'metadata.labels: Invalid value: "{value}": {why}')
            elif field == "annotations" and not isinstance(value, str):
                problems.append(f"metadata.annotations.{key}: must be a string")
    if problems:
        raise PatchRejectedError(422, f'Node "{name}" is invalid: ' + "; ".join(problems))


def patched_node(current: Obj, patch: Any, content_type: str) -> Obj:
    """The node after ``patch``, validated the way the API server validates it."""
    name = current["metadata"]["name"]
    if not isinstance(patch, dict):
        raise PatchRejectedError(400, "the patch must be a JSON object")
    if content_type == STRATEGIC_MERGE_PATCH:
        _check_strategic(patch)
    wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
    if wanted_rv is not None and wanted_rv != current["metadata"]["resourceVersion"]:
        raise PatchRejectedError(
            409,
            f'Operation cannot be fulfilled on nodes "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            "Conflict",
        )
    node: Obj = merge_patch(clone(current), patch)
    meta = node.get("metadata")
    if not isinstance(meta, dict):
        raise PatchRejectedError(400, "metadata must be an object")
    for field in _IMMUTABLE:
        if meta.get(field) != current["metadata"].get(field):
            raise PatchRejectedError(422, f'Node "{name}" is invalid: metadata.{field}: field is immutable')
    meta["resourceVersion"] = current["metadata"]["resourceVersion"]
    _validate_metadata(name, meta)
    return node


async def handle_node_patch(request: web.Request, cluster: SimCluster) -> web.Response:
    """Apply a merge or strategic-merge patch to a node; one MODIFIED event when it changes."""
    name = request.match_info["name"]
    content_type = request.content_type.lower()
    if content_type not in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        message = f"gpuid.sim accepts {MERGE_PATCH} and {STRATEGIC_MERGE_PATCH}, not {content_type!r}"
        return wire.status_response(415, message, "UnsupportedMediaType")
    current = cluster.current("nodes", "", name)
    if current is None:
        return wire.not_found("nodes", name)
    try:
        patch = json.loads(await request.read())
    except ValueError as e:
        return wire.status_response(400, f"error decoding patch: {e}")
    try:
        node = patched_node(current.obj, patch, content_type)
    except PatchRejectedError as e:
        return e.response()
    if node == current.obj:  # the real server skips writes that change nothing
        return web.Response(body=current.object_json(), content_type=wire.JSON)
    cluster.replace_object("nodes", "", name, node)
    stored = cluster.current("nodes", "", name)
    assert stored is not None
    return web.Response(body=stored.object_json(), content_type=wire.JSON)
