"""HTTP exporter against a real aiohttp collector on 127.0.0.1: statuses, classes, redirects, secrets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gpuid.config import load_settings
from gpuid.delivery.delivery import Delivery
from gpuid.errors import ConfigError, ExportError, LaneError, RecordError
from gpuid.exporters.http import HttpExporter
from gpuid.metrics import Metrics
from gpuid.records import GPUReading
from tests.support.app import eventually, sample
from tests.support.records import change, delivering, fast_delivery, reading
from tests.support.services import serving

from .standins import silent_endpoint

TOKEN = "tok-Sekr3t-42"
POISON = reading(29).gpu_uuid  # the collector refuses any batch that holds it


class Collector:
    """The receiving end: answers with ``status`` and keeps what it accepted."""

    def __init__(self) -> None:
        self.status = 200
        self.token = TOKEN
        self.posts = 0
        self.bodies: list[list[dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        if self.status != 200:
            return web.Response(status=self.status, text=f"nope, not with {TOKEN}")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="bad token")
        body = await request.json()
        if any(r["gpu_uuid"] == POISON for r in body):
            return web.Response(status=422, text="gpu_serial: value out of range")
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        return web.Response(status=204)

    def uuids(self) -> list[str]:
        return [r["gpu_uuid"] for body in self.bodies for r in body]


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    c = Collector()
    app = web.Application()
    app.router.add_post("/ingest", c.handle)
    async with serving(app) as url:
        yield c, f"{url}/ingest"


def exporter_for(url: str, token: str = TOKEN, timeout: str = "2s") -> HttpExporter:
    env = {"CLUSTER_NAME": "t", "EXPORTER_TYPE": "http", "HTTP_ENDPOINT": url, "HTTP_AUTH_TOKEN": token}
    return HttpExporter.from_settings(load_settings(env | {"HTTP_TIMEOUT": timeout}).exporters)


async def export_error(exporter: HttpExporter, reading: GPUReading) -> ExportError:
    """The ``ExportError`` one export of ``reading`` raises (the test fails if none is raised)."""
    await exporter.open()
    try:
        with pytest.raises(ExportError) as err:
            await exporter.export([reading])
    finally:
        await exporter.close()
    return err.value


def dropped(metrics: Metrics, reason: str) -> float:
    return sample(metrics, "gpuid_export_dropped_total", exporter="http", reason=reason)


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


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, LaneError),
        (403, LaneError),
        (404, LaneError),
        (405, LaneError),
        (409, LaneError),
        (408, ExportError),
        (429, ExportError),
        (500, ExportError),
        (503, ExportError),
        (400, RecordError),
        (413, RecordError),
        (422, RecordError),
    ],
)
async def test_status_decides_the_failure_class(collector: Any, status: int, kind: type) -> None:
    c, url = collector
    c.status = status
    error = await export_error(exporter_for(url), reading(1))
    assert type(error) is kind
    assert str(status) in str(error)
    assert TOKEN not in str(error)  # the collector echoed it: redacted


async def test_a_redirect_is_a_lane_error_and_never_delivered(collector: Any) -> None:
    elsewhere, url = collector  # another origin, which would take the batch (and the token)

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{url}?sig=Redirect-S3cret")

    app = web.Application()
    app.router.add_post("/ingest", redirect)
    metrics = Metrics()
    async with serving(app) as origin:
        error = await export_error(exporter_for(f"{origin}/ingest"), reading(1))
        assert isinstance(error, LaneError)
        assert "redirects are not followed" in str(error)
        assert "Redirect-S3cret" not in str(error)
        delivery = Delivery([exporter_for(f"{origin}/ingest")], metrics, fast_delivery())
        async with delivering(delivery, grace=0.2):
            delivery.submit([reading(1)])
            await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="http") >= 2)
            assert delivery.waiting() == {"http": 1}
    assert elsewhere.posts == 0
    assert sample(metrics, "gpuid_export_success_total", exporter="http") == 0


async def test_secrets_in_the_endpoint_never_reach_a_message(collector: Any, log_output: Any) -> None:
    c, url = collector
    c.status = 401
    endpoint = url + "?token=qs-Secr3t-7&x=1#frag"
    error = await export_error(exporter_for(endpoint), reading(1))
    assert url in str(error)  # shown as scheme://host:port/path
    for secret in ("qs-Secr3t-7", "x=1", "frag", TOKEN):
        assert secret not in str(error)
    unreachable = "http://127.0.0.1:9/ingest?token=qs-Secr3t-7"
    error = await export_error(exporter_for(unreachable), reading(1))
    assert "qs-Secr3t-7" not in str(error)
    metrics = Metrics()
    delivery = Delivery([exporter_for(endpoint)], metrics, fast_delivery())
    async with delivering(delivery, grace=0.1):
        delivery.submit([reading(1)])
        await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="http") >= 1)
    assert "qs-Secr3t-7" not in log_output.getvalue()
    assert TOKEN not in log_output.getvalue()


async def test_one_poisoned_record_in_fifty_costs_only_itself(collector: Any, log_output: Any) -> None:
    c, url = collector
    metrics = Metrics()
    delivery = Delivery([exporter_for(url)], metrics, fast_delivery(batch_size=50))
    produced = [reading(n, node=f"node-{n % 30}") for n in range(50)]  # thirty nodes in one batch
    async with delivering(delivery):
        delivery.submit(produced)
        await eventually(lambda: delivery.waiting() == {"http": 0})
    assert sorted(c.uuids()) == sorted(r.gpu_uuid for r in produced if r.gpu_uuid != POISON)
    assert dropped(metrics, "rejected") == 1
    assert len(c.uuids()) + dropped(metrics, "rejected") == len(produced)
    assert c.posts <= 13  # bisection: the batch, then two halves per level of log2(50)
    [line] = [e for raw in log_output.getvalue().splitlines() if "refused" in (e := json.loads(raw))["event"]]
    assert (line["node"], line["pod"], line["gpu_uuid"]) == ("node-29", produced[29].source, POISON)
    assert "422" in line["error"]


async def test_a_bad_token_parks_and_a_restart_with_the_right_one_delivers_everything(
    collector: Any, tmp_path: Path, log_output: Any
) -> None:
    c, url = collector
    wrong = "tok-Wr0ng-77"
    settings = fast_delivery(batch_size=5, queue_size=10, spool_dir=tmp_path)
    produced = [reading(n) for n in range(100, 140)]
    metrics = Metrics()
    first = Delivery([exporter_for(url, wrong)], metrics, settings)
    async with delivering(first, grace=0.2):
        for n in range(0, 40, 4):
            first.submit(produced[n : n + 4])
        await eventually(lambda: c.posts >= 5, what="several parked retries")
        assert sample(metrics, "gpuid_exporter_up", exporter="http") == 0
    assert first.waiting() == {"http": 40}  # nothing dropped, all of it spooled
    assert sum(1 for raw in log_output.getvalue().splitlines() if '"exporter parked"' in raw) == 1
    assert "HTTP_AUTH_TOKEN" in log_output.getvalue()
    assert wrong not in log_output.getvalue()

    metrics = Metrics()
    again = Delivery([exporter_for(url)], metrics, settings)  # the fixed configuration
    async with delivering(again):
        await eventually(lambda: again.waiting() == {"http": 0})
        assert sample(metrics, "gpuid_exporter_up", exporter="http") == 1
    assert sorted(set(c.uuids())) == sorted(r.gpu_uuid for r in produced)
    assert dropped(metrics, "rejected") == 0


async def test_a_collector_that_refuses_the_token_for_a_while_gets_every_record_once_it_accepts(
    collector: Any, tmp_path: Path
) -> None:
    c, url = collector
    c.token = "not-yet-registered"  # the collector does not know gpuid's token yet
    metrics = Metrics()
    settings = fast_delivery(batch_size=5, queue_size=10, spool_dir=tmp_path)
    produced = [reading(n) for n in range(200, 230)]
    delivery = Delivery([exporter_for(url)], metrics, settings)
    async with delivering(delivery):
        for n in range(0, 30, 3):
            delivery.submit(produced[n : n + 3])
        await eventually(lambda: c.posts >= 5, what="several parked retries")
        assert delivery.waiting() == {"http": 30}
        c.token = TOKEN  # registered: no restart of gpuid
        await eventually(lambda: delivery.waiting() == {"http": 0})
    assert sorted(set(c.uuids())) == sorted(r.gpu_uuid for r in produced)
    assert sum(s.value for s in metrics.export_dropped.collect()[0].samples if s.name.endswith("total")) == 0


async def test_a_silent_collector_fails_within_http_timeout() -> None:
    async with silent_endpoint() as silent:
        exporter = exporter_for(f"{silent.url}/ingest", timeout="0.5s")
        async with asyncio.timeout(5):  # HTTP_TIMEOUT bounds it, not the peer
            error = await export_error(exporter, reading(1))
    assert type(error) is ExportError  # transient: the same records later


async def test_endpoint_down_is_transient() -> None:
    error = await export_error(exporter_for("http://127.0.0.1:9/ingest"), reading(1))
    assert type(error) is ExportError


def test_config_errors_name_the_variable() -> None:
    base = {"CLUSTER_NAME": "t", "EXPORTER_TYPE": "http"}
    with pytest.raises(ConfigError, match="HTTP_ENDPOINT is required"):
        HttpExporter.from_settings(load_settings(base).exporters)
    for userinfo in ("u:hunter2@", "hunter2@"):
        env = base | {"HTTP_ENDPOINT": f"https://{userinfo}x.example/i?k=hunter2"}
        with pytest.raises(ConfigError, match="HTTP_ENDPOINT") as err:
            HttpExporter.from_settings(load_settings(env).exporters)
        assert "hunter2" not in str(err.value)
