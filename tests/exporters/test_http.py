"""HTTP exporter against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gpuid.config import load_settings
from gpuid.delivery.delivery import Delivery
from gpuid.errors import ConfigError, ExportError
from gpuid.exporters.http import HttpExporter
from gpuid.metrics import Metrics
from gpuid.records import GPUReading
from tests.support.app import eventually
from tests.support.records import change, delivering, fast_delivery, reading
from tests.support.services import serving

TOKEN = "tok-Sekr3t-42"


class Collector:
    """The receiving end: answers with ``status`` and keeps what it accepted."""

    def __init__(self) -> None:
        self.status = 200
        self.bodies: list[list[dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        if self.status != 200:
            return web.Response(status=self.status, text="nope")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="bad token")
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        return web.Response(status=204)


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    c = Collector()
    app = web.Application()
    app.router.add_post("/ingest", c.handle)
    async with serving(app) as url:
        yield c, f"{url}/ingest"


def exporter_for(url: str, token: str = TOKEN) -> HttpExporter:
    env = {"CLUSTER_NAME": "t", "EXPORTER_TYPE": "http", "HTTP_ENDPOINT": url, "HTTP_AUTH_TOKEN": token}
    return HttpExporter.from_settings(load_settings(env | {"HTTP_TIMEOUT": "2s"}).exporters)


async def export_error(exporter: HttpExporter, reading: GPUReading) -> ExportError:
    """The ``ExportError`` one export of ``reading`` raises (the test fails if none is raised)."""
    await exporter.open()
    try:
        with pytest.raises(ExportError) as err:
            await exporter.export([reading])
    finally:
        await exporter.close()
    return err.value


async def test_batch_is_a_json_array_with_every_field(collector: Any) -> None:
    c, url = collector
    exporter = exporter_for(url)
    batch = [reading(n) for n in range(3)]
    await exporter.open()
    try:
        await exporter.export(batch)
    finally:
        await exporter.close()
    assert c.bodies == [[r.to_dict() for r in batch]]
    assert c.headers[0]["Content-Type"] == "application/json"
    assert len(c.headers[0]["Idempotency-Key"]) == 64
    assert TOKEN not in repr(exporter.config)


async def test_http_sends_a_change_in_the_array_with_its_event(collector: Any) -> None:
    c, url = collector
    exporter = exporter_for(url)
    await exporter.open()
    try:
        await exporter.export([reading(1), change(2)])
    finally:
        await exporter.close()
    [[sent_reading, sent_change]] = c.bodies
    assert sent_reading == reading(1).to_dict()
    assert sent_change == {"event": "gpu_changed", **change(2).to_dict()}


@pytest.mark.parametrize(("status", "transient"), [(401, False), (404, False), (429, True), (503, True)])
async def test_status_decides_transient(collector: Any, status: int, transient: bool) -> None:
    c, url = collector
    c.status = status
    error = await export_error(exporter_for(url), reading(1))
    assert error.transient is transient
    assert str(status) in str(error)


async def test_bad_token_dropped_as_permanent_and_never_logged(collector: Any, log_output: Any) -> None:
    _, url = collector
    wrong = "tok-Wr0ng-77"
    metrics = Metrics()
    delivery = Delivery([exporter_for(url, wrong)], metrics, fast_delivery())
    async with delivering(delivery):
        delivery.submit([reading(1)])
        await eventually(lambda: metrics.export_dropped.labels("http", "permanent")._value.get() == 1)
    lines = log_output.getvalue().splitlines()
    assert any("HTTP_AUTH_TOKEN" in json.loads(line).get("error", "") for line in lines)
    assert wrong not in log_output.getvalue()
    assert TOKEN not in log_output.getvalue()


async def test_endpoint_down_is_transient() -> None:
    error = await export_error(exporter_for("http://127.0.0.1:9/ingest"), reading(1))
    assert error.transient


def test_config_errors_name_the_variable() -> None:
    base = {"CLUSTER_NAME": "t", "EXPORTER_TYPE": "http"}
    with pytest.raises(ConfigError, match="HTTP_ENDPOINT is required"):
        HttpExporter.from_settings(load_settings(base).exporters)
    with pytest.raises(ConfigError, match="HTTP_ENDPOINT") as err:
        HttpExporter.from_settings(
            load_settings(base | {"HTTP_ENDPOINT": "https://u:hunter2@x.example/i"}).exporters
        )
    assert "hunter2" not in str(err.value)
