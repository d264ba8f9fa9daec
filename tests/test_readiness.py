"""/readyz answers for the scanning, not for the backends: an exporter outage never makes it 503."""

from __future__ import annotations

import aiohttp

from tests.support.app import H100, Running, Sim, add_gpu_node, eventually, running_app


async def get(run: Running, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{run.app.server.port}{path}"
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        return answer.status, await answer.text()


async def test_ready_while_an_exporter_is_down_and_the_outage_is_reported(sim: Sim) -> None:
    add_gpu_node(sim, "n1", H100)
    down = {"EXPORTER_TYPE": "http", "HTTP_ENDPOINT": "http://127.0.0.1:9/ingest", "HTTP_TIMEOUT": "1s"}
    async with running_app(sim, EXPORT_RETRY_MAX_BACKOFF="0.2s", SHUTDOWN_GRACE="0.5s", **down) as run:
        await eventually(lambda: len(run.memory.records) == 8)
        await eventually(lambda: run.sample("gpuid_export_failure_total", exporter="http") >= 1)
        status, why = await get(run, "/readyz")
        assert status == 200
        assert "exporters down, records kept: http" in why
        _, metrics = await get(run, "/metrics")
        assert "\ngpuid_ready 1.0\n" in metrics
        assert 'gpuid_exporter_up{exporter="http"} 0.0' in metrics
        assert 'gpuid_exporter_up{exporter="memory"} 1.0' in metrics
        assert run.app.delivery.waiting()["http"] == 8
