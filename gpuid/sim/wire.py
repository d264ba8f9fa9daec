"""Kubernetes wire formats the sim speaks: Status errors, lists, watch lines.

Clients decide what to do from these bodies, not just from HTTP codes:
kubernetes_asyncio turns a watch ``ERROR`` line into ``ApiException(410)``
only when the object has ``code``, ``reason`` and ``message``; ``Watch``
parses a bare Status line on a failed watch request the same way; and
``WsApiClient.parse_error_data`` reads the exit code from
``details.causes[0].message``. Keeping every such shape in one module keeps
them consistent between the HTTP, watch and exec paths. The ``/version``
body and the kubeconfig the client loads live here for the same reason.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from aiohttp import web

from gpuid.sim.events import WatchEvent, dump

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "AlreadyExists",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
KINDS = {"pods": "Pod", "nodes": "Node"}
JSON = "application/json"
VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.4-gpuid-sim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-10T11:36:31Z",
    "goVersion": "go1.22.9",
    "compiler": "gc",
    "platform": "linux/amd64",
}
CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter."
)
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}{ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {user}
    namespace: {namespace}
current-context: {name}
"""


def kubeconfig(name: str, server: str, token: str, *, user: str, namespace: str, ca_pem: bytes = b"") -> str:
    """A kubeconfig whose cluster and context are called ``name``, its user ``user``; ``ca_pem``: the CA."""
    values = {"server": server, "token": token, "user": user}
    quoted = {k: json.dumps(v) for k, v in values.items()}  # JSON strings are YAML
    ca = f"\n    certificate-authority-data: {base64.b64encode(ca_pem).decode()}" if ca_pem else ""
    return KUBECONFIG.format(name=name, namespace=namespace, ca=ca, **quoted)


def truthy(value: str | None) -> bool:
    """Query booleans: kubernetes_asyncio sends ``True``, kubectl ``true``, some clients ``1``."""
    return (value or "").lower() in ("true", "1")


def status_object(code: int, message: str, reason: str | None = None) -> dict[str, object]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }


def status_response(
    code: int, message: str, reason: str | None = None, *, retry_after: int | None = None
) -> web.Response:
    """An error response with a ``Status`` body, as every API server error is (+ ``Retry-After``)."""
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    body = dump(status_object(code, message, reason))
    return web.Response(status=code, body=body, content_type=JSON, headers=headers)


def not_found(resource: str, name: str) -> web.Response:
    return status_response(404, f'{resource} "{name}" not found')


def too_old_message(requested: int, oldest: int) -> str:
    return f"too old resource version: {requested} ({oldest})"


def error_line(code: int, message: str, reason: str | None = None) -> bytes:
    """A watch ``ERROR`` event (the stream itself is HTTP 200)."""
    return b'{"type":"ERROR","object":' + dump(status_object(code, message, reason)) + b"}\n"


def bookmark_line(resource: str, rv: int) -> bytes:
    obj = {
        "kind": KINDS.get(resource, "Unknown"),
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(rv), "annotations": {"k8s.io/initial-events-end": "true"}},
    }
    return b'{"type":"BOOKMARK","object":' + dump(obj) + b"}\n"


def list_body(resource: str, rv: int, items: Sequence[WatchEvent], continue_token: str | None) -> bytes:
    """A ``PodList``/``NodeList`` assembled from each object's cached JSON."""
    meta: dict[str, str] = {"resourceVersion": str(rv)}
    if continue_token:
        meta["continue"] = continue_token
    head = f'{{"kind":"{KINDS.get(resource, "Unknown")}List","apiVersion":"v1","metadata":'.encode()
    return head + dump(meta) + b',"items":[' + b",".join(ev.object_json() for ev in items) + b"]}"


def encode_continue(rv: int, last: tuple[str, str]) -> str:
    raw = json.dumps({"rv": rv, "ns": last[0], "name": last[1]}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    """``(list rv, last key)`` from a continue token; ValueError when it is not one of ours."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["ns"]), str(data["name"]))
    except (binascii.Error, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"invalid continue token: {e}") from e


def exec_status(argv: Sequence[str], exit_code: int) -> bytes:
    """The channel-3 Status the kubelet sends when the command finishes."""
    if exit_code == 0:
        return b'{"metadata":{},"status":"Success"}'
    return dump(
        {
            "metadata": {},
            "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command "
            f"[{' '.join(argv)}], exit code {exit_code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
        }
    )


def exec_internal_error(message: str) -> bytes:
    """The channel-3 Status when the runtime cannot start the command at all (no exit code!)."""
    full = f"error executing command in container: {message}"
    return dump(
        {
            "metadata": {},
            "status": "Failure",
            "message": f"Internal error occurred: {full}",
            "reason": "InternalError",
            "details": {"causes": [{"message": full}]},
            "code": 500,
        }
    )


def request_key(request: web.Request) -> str:
    """``"list pods"``, ``"watch pods"``, ``"get node"``, ``"exec"``… from the route name."""
    name = request.match_info.route.name
    if not name:
        return "other"
    verb, *resource = name.split(".")[:2]
    if verb == "list" and truthy(request.query.get("watch")):
        verb = "watch"
    return " ".join([verb, *resource])
