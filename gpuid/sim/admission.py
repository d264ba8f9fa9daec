"""Admission of exec, attach and port-forward: who asked for what, and a hook that may refuse it.

On a real cluster every ``CONNECT`` to ``pods/exec``, ``pods/attach`` or
``pods/portforward`` passes admission before the kubelet is reached: the
admitted object is the request's options (``PodExecOptions``, built from the
query string) and the request carries the authenticated user. The sim does
the same. It builds both as the API server would (booleans parsed like Go's
``strconv.ParseBool``; false booleans and an empty container left out, as in
their JSON form), records every request in ``SimApiServer.connect_log`` and,
when the server was given an admission hook, asks it first. A refusal is a
403 Status before the WebSocket upgrade, as a ValidatingAdmissionPolicy
answers. The hook is a plain callable, so the sim needs no policy engine and
imports nothing of gpuid: the tests plug in a CEL evaluator of the policy
gpuid ships.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, MutableSequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gpuid.sim import wire

# (AdmissionRequest, object) -> None to admit the request, else the message of the refusal.
AdmissionHook = Callable[[Mapping[str, Any], Mapping[str, Any]], str | None]

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
OPTION_KINDS = {
    "exec": "PodExecOptions",
    "attach": "PodAttachOptions",
    "portforward": "PodPortForwardOptions",
}
_STREAMS = ("stdin", "stdout", "stderr", "tty")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True)
class ConnectRecord:
    """One exec, attach or port-forward request as admission saw it."""

    user: str
    namespace: str
    pod: str
    subresource: str  # "exec", "attach" or "portforward"
    options: Mapping[str, Any]  # the admitted object: PodExecOptions, PodAttachOptions...
    denied: str | None  # the refusal's message; None when admitted

    @property
    def container(self) -> str:
        return str(self.options.get("container", ""))

    @property
    def command(self) -> tuple[str, ...]:
        return tuple(self.options.get("command", ()))

    def stream(self, name: str) -> bool:
        """``stdin``, ``stdout``, ``stderr`` or ``tty`` as requested (absent means false)."""
        return bool(self.options.get(name, False))


def groups_of(user: str) -> list[str]:
    """The groups the API server adds to an authenticated user (a ServiceAccount's two, and everyone's)."""
    if user.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace = user[len(SERVICE_ACCOUNT_PREFIX) :].split(":", 1)[0]
        return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
    return ["system:authenticated"]


def _parse_bool(name: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f'{name}: invalid value "{value}": strconv.ParseBool: parsing "{value}": invalid syntax')


def connect_options(subresource: str, query: Mapping[str, str], values: list[str]) -> dict[str, Any]:
    """The options object of a connect request; ``values`` are the repeated ``command``/``ports``."""
    options: dict[str, Any] = {"kind": OPTION_KINDS[subresource], "apiVersion": "v1"}
    if subresource == "portforward":
        try:
            options["ports"] = [int(p) for p in values]
        except ValueError as e:
            raise ValueError(f"ports: {e}") from None
        return options
    for name in _STREAMS:
        if name in query and _parse_bool(name, query[name]):
            options[name] = True
    if query.get("container"):
        options["container"] = query["container"]
    if subresource == "exec":
        options["command"] = list(values)
    return options


def admission_request(
    user: str, namespace: str, pod: str, subresource: str, options: Mapping[str, Any]
) -> dict[str, Any]:
    """An ``admission.k8s.io/v1`` AdmissionRequest for a connect, as policies and webhooks see it."""
    pods = {"group": "", "version": "v1", "resource": "pods"}
    kind = {"group": "", "version": "v1", "kind": options["kind"]}
    return {
        "uid": str(uuid.uuid4()),
        "kind": kind,
        "resource": pods,
        "subResource": subresource,
        "requestKind": kind,
        "requestResource": pods,
        "requestSubResource": subresource,
        "name": pod,
        "namespace": namespace,
        "operation": "CONNECT",
        "userInfo": {"username": user, "groups": groups_of(user)},
        "dryRun": False,
    }


def admit(
    request: web.Request,
    subresource: str,
    *,
    user: str,
    hook: AdmissionHook | None,
    log: MutableSequence[ConnectRecord],
) -> web.Response | None:
    """Record the connect request and ask ``hook``: None to go on, else the error response to send."""
    namespace, pod = request.match_info["namespace"], request.match_info["name"]
    repeated = "ports" if subresource == "portforward" else "command"
    try:
        options = connect_options(subresource, request.query, request.query.getall(repeated, []))
    except ValueError as e:
        return wire.status_response(400, str(e))
    denied = None
    if hook is not None:
        denied = hook(admission_request(user, namespace, pod, subresource, options), options)
    log.append(ConnectRecord(user, namespace, pod, subresource, options, denied))
    if denied is not None:
        return wire.status_response(403, f'pods "{pod}" is forbidden: {denied}', "Forbidden")
    return None
