"""The simulated Kubernetes API server: real HTTP (or HTTPS, ``tls.py``) on 127.0.0.1, real client.

gpuid's Kubernetes code is only trustworthy if it is tested against the
protocol, not against mocks of kubernetes_asyncio. This server answers the
same paths, query parameters, status codes and bodies as a real API server
for the calls gpuid makes (list/watch/get pods and nodes, exec), authenticates
the bearer token as a user (gpuid's ServiceAccount unless told otherwise),
counts requests for load benchmarks and applies the cluster's injected
failures, and writes a kubeconfig so the unmodified client can be pointed at
it. Exec, attach and port-forward pass admission first (``admission.py``);
node PATCH lives in ``nodepatch.py``, ``coordination.k8s.io/v1`` Leases
(leader election) in ``leases.py`` and ``events.k8s.io/v1`` Events in
``eventsapi.py``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from pathlib import Path
from types import TracebackType

from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler

from gpuid.sim import eventsapi, leases, wire
from gpuid.sim.admission import AdmissionHook, ConnectRecord, admit
from gpuid.sim.cluster import SimCluster
from gpuid.sim.execsim import handle_exec
from gpuid.sim.filters import ObjectFilter, SelectorError
from gpuid.sim.nodepatch import handle_node_patch
from gpuid.sim.tls import HOST, self_signed, server_context
from gpuid.sim.watchstream import WatchRequest, list_page, serve_watch

NAME = "gpuid-sim"
SERVICE_ACCOUNT = "system:serviceaccount:gpuid:gpuid"  # who the kubeconfig's token authenticates as
CONNECT_LOG_SIZE = 100_000  # exec/attach/port-forward requests remembered (the demo runs for hours)
USER = web.RequestKey("user", str)  # who the request's token authenticated as


class SimApiServer:
    """An in-process API server for a :class:`SimCluster`; ``async with`` starts and stops it."""

    def __init__(
        self,
        cluster: SimCluster,
        *,
        bookmark_interval: float = 1.0,
        token: str | None = None,
        user: str = SERVICE_ACCOUNT,
        admission: AdmissionHook | None = None,
        tls: bool = False,
    ) -> None:
        self.cluster = cluster
        self.tls = tls
        self.ca_pem, key = self_signed() if tls else (b"", b"")  # the certificate clients must trust
        self._ssl = server_context(self.ca_pem, key) if tls else None  # kept across restarts
        self.bookmark_interval = bookmark_interval
        self.token = token or secrets.token_urlsafe(24)
        self.user = user
        self.admission = admission  # asked about every exec, attach and port-forward
        self.connect_log: deque[ConnectRecord] = deque(maxlen=CONNECT_LOG_SIZE)
        self._users = {self.token: user}
        self.url = ""
        self._closing = False
        self._sockets: set[web.WebSocketResponse] = set()
        self._watches = 0
        self._runner: web.AppRunner | None = None
        self._port = 0

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        route = app.router.add_route
        route("GET", "/version", self._version, name="get.version")
        route("GET", "/version/", self._version, name="get.version.slash")
        route("GET", "/api/v1/pods", self._list, name="list.pods.all_namespaces")
        route("GET", "/api/v1/namespaces/{namespace}/pods", self._list, name="list.pods")
        pod = "/api/v1/namespaces/{namespace}/pods/{name}"
        route("GET", pod, self._get, name="get.pod")
        route("*", pod + "/exec", self._exec, name="exec")
        route("*", pod + "/attach", self._connect, name="attach")
        route("*", pod + "/portforward", self._connect, name="portforward")
        route("GET", "/api/v1/nodes", self._list, name="list.nodes")
        route("GET", "/api/v1/nodes/{name}", self._get, name="get.node")
        route("PATCH", "/api/v1/nodes/{name}", self._patch_node, name="patch.node")
        leases.add_routes(app, self.cluster)  # coordination.k8s.io/v1 Leases for leader election
        eventsapi.add_routes(app, self.cluster)  # events.k8s.io/v1 Events about GPU changes
        return app

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> str:
        """Listen on an ephemeral 127.0.0.1 port; returns the base URL.

        After :meth:`stop`, ``start()`` listens on the same port again, so a
        stop/start pair simulates an API server restart behind a fixed address.
        """
        if self._runner is not None:
            return self.url
        self._closing = False
        # handler_cancellation: a client that hangs up ends its watch at once, not at the next event.
        app = self._make_app()
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=2.0, handler_cancellation=True
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, HOST, self._port, ssl_context=self._ssl, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, self._port = runner.addresses[0][:2]
        self.url = f"{'https' if self.tls else 'http'}://{host}:{self._port}"
        return self.url

    async def stop(self) -> None:
        """End open watches and exec sessions, then close the listener and every connection."""
        if self._runner is None:
            return
        self._closing = True
        self.cluster.log.notify()  # watch loops see _closing and end their streams
        sockets = list(self._sockets)
        if sockets:
            await asyncio.gather(
                *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping") for ws in sockets),
                return_exceptions=True,
            )
        runner, self._runner = self._runner, None
        await runner.cleanup()

    @property
    def open_watches(self) -> int:
        """Watch streams being served right now (lets tests check a client holds exactly what it should)."""
        return self._watches

    @property
    def open_exec_sessions(self) -> int:
        """Exec WebSockets open right now."""
        return len(self._sockets)

    async def __aenter__(self) -> SimApiServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def add_user(self, name: str) -> str:
        """A bearer token that authenticates as ``name`` (someone other than gpuid, in tests)."""
        token = secrets.token_urlsafe(24)
        self._users[token] = name
        return token

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig (context and cluster ``gpuid-sim``, user ``self.user``) for the server."""
        if not self.url:
            raise RuntimeError("start the server before writing its kubeconfig")
        path = Path(path)
        text = wire.kubeconfig(
            NAME, self.url, self.token, user=self.user, namespace="gpu-operator", ca_pem=self.ca_pem
        )
        path.write_text(text)
        return path

    # -- cross-cutting: accounting, auth, injected failures, Status errors ------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.cluster.request_counts[wire.request_key(request)] += 1
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = self._users.get(token) if scheme == "Bearer" else None
        if user is None:
            return wire.status_response(401, "Unauthorized")
        request[USER] = user
        failure = self.cluster.take_failure(request.path_qs)
        if failure is not None:
            message = f"gpuid.sim: injected failure ({failure.status})"
            return wire.status_response(failure.status, message, retry_after=failure.retry_after)
        try:
            return await handler(request)
        except web.HTTPException as e:  # no such route or method
            if e.status == 404:
                return wire.status_response(404, "the server could not find the requested resource")
            return wire.status_response(e.status, e.reason)

    # -- handlers ---------------------------------------------------------------------------------
    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(wire.VERSION)

    async def _get(self, request: web.Request) -> web.Response:
        resource = "pods" if "namespace" in request.match_info else "nodes"
        name = request.match_info["name"]
        current = self.cluster.current(resource, request.match_info.get("namespace", ""), name)
        if current is None:
            return wire.not_found(resource, name)
        return web.Response(body=current.object_json(), content_type=wire.JSON)

    async def _patch_node(self, request: web.Request) -> web.Response:
        return await handle_node_patch(request, self.cluster)

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "POST"):
            return wire.status_response(405, f"the server does not allow this method: {request.method}")
        refused = admit(request, "exec", user=request[USER], hook=self.admission, log=self.connect_log)
        return refused or await handle_exec(request, self.cluster, self._sockets)

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        """Attach and port-forward: admitted (or refused) like exec, then not simulated."""
        subresource = request.path.rsplit("/", 1)[1]
        refused = admit(request, subresource, user=request[USER], hook=self.admission, log=self.connect_log)
        return refused or wire.status_response(400, f"gpuid.sim does not simulate {subresource}")

    async def _list(self, request: web.Request) -> web.StreamResponse:
        resource = request.path.rsplit("/", 1)[1]
        query = request.query
        try:
            flt = ObjectFilter.parse(
                resource,
                request.match_info.get("namespace"),
                query.get("labelSelector", ""),
                query.get("fieldSelector", ""),
            )
            rv = int(query.get("resourceVersion") or 0)
            limit = int(query.get("limit") or 0)
            timeout = int(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        except (SelectorError, ValueError) as e:
            return wire.status_response(400, str(e))
        if rv > self.cluster.resource_version:
            message = f"Too large resource version: {rv}, current: {self.cluster.resource_version}"
            return wire.status_response(504, message, "Timeout")
        if wire.truthy(query.get("watch")):
            watch = WatchRequest.from_query(resource, flt, query, rv=rv, timeout=timeout)
            self._watches += 1
            try:
                return await serve_watch(
                    request,
                    self.cluster,
                    watch,
                    bookmark_interval=self.bookmark_interval,
                    is_closing=lambda: self._closing,
                )
            finally:
                self._watches -= 1
        match, token = query.get("resourceVersionMatch"), query.get("continue")
        return list_page(self.cluster, resource, flt, match=match, rv=rv, limit=limit, token=token)
