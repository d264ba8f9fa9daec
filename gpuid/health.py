"""The /metrics, /healthz and /readyz endpoints, served in gpuid's own event loop.

aiohttp serves them in the loop that does the work, so a wedged loop fails
the liveness probe instead of hiding behind a healthy helper thread.
``/readyz`` asks the ``App`` what readiness means (watching and scanning, or
standing by as a follower); ``/metrics`` renders the registry of ``Metrics``.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gpuid.metrics import Metrics


class HealthServer:
    def __init__(self, metrics: Metrics, is_ready: Callable[[], tuple[bool, str]], port: int) -> None:
        self._metrics = metrics
        self._is_ready = is_ready
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _metrics_handler(self, _: web.Request) -> web.Response:
        ready, _why = self._is_ready()
        self._metrics.ready.set(1 if ready else 0)
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, why = self._is_ready()
        return web.Response(text=f"{why}\n", status=200 if ready else 503)

    async def start(self, host: str = "0.0.0.0") -> None:  # noqa: S104 - probes come from the kubelet
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
