"""What an S3 failure costs: codes from a stand-in store, missing credentials, silent endpoints.

The stand-ins speak real HTTP, so botocore parses their answers exactly as it
would AWS's; the silent endpoint accepts connections and never answers, the
case that once hung a lane forever on ``Expect: 100-continue``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from gpuid.config import load_settings
from gpuid.delivery.delivery import Delivery
from gpuid.errors import ExportError, LaneError, RecordError
from gpuid.exporters.s3 import S3Exporter
from gpuid.metrics import Metrics
from tests.support.app import eventually, sample
from tests.support.records import delivering, fast_delivery, reading
from tests.support.services import serving

from .standins import BUCKET_EXISTS, refusing_s3, s3_error_document, silent_endpoint


def exporter_at(s3_env: dict[str, str], endpoint: str, timeout: str = "5s") -> S3Exporter:
    env = s3_env | {"S3_ENDPOINT_URL": endpoint, "S3_TIMEOUT": timeout}
    return S3Exporter.from_settings(load_settings(env).exporters)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (403, "AccessDenied", LaneError),
        (403, "InvalidAccessKeyId", LaneError),
        (403, "SignatureDoesNotMatch", LaneError),
        (400, "ExpiredToken", LaneError),
        (403, "RequestTimeTooSkewed", LaneError),
        (404, "NoSuchBucket", LaneError),
        (400, "InvalidArgument", LaneError),  # S3 sees no record content but the body: a setting
        (400, "EntityTooLarge", RecordError),
        (503, "SlowDown", ExportError),
        (500, "InternalError", ExportError),
        (429, "TooManyRequests", ExportError),
    ],
)
async def test_error_codes_decide_the_failure_class(
    s3_env: dict[str, str], status: int, code: str, kind: type
) -> None:
    async with refusing_s3(status, code) as url:
        exporter = exporter_at(s3_env, url)
        await exporter.open()
        try:
            with pytest.raises(ExportError) as err:
                await exporter.export([reading(1)])
        finally:
            await exporter.close()
    assert type(err.value) is kind
    assert code in str(err.value)


async def test_missing_credentials_are_a_lane_error(s3_env: dict[str, str], monkeypatch: Any) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    exporter = exporter_at(s3_env, s3_env["S3_ENDPOINT_URL"])
    with pytest.raises(LaneError, match="credential"):
        await exporter.open()


async def test_an_object_too_large_is_halved_until_it_fits(s3_env: dict[str, str]) -> None:
    stored: list[int] = []

    async def put(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response()
        lines = (await request.read()).count(b"\n")
        if lines > 3:
            return web.Response(status=400, text=s3_error_document("EntityTooLarge"))
        stored.append(lines)
        return web.Response(headers={"ETag": '"e"'})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", put)
    metrics = Metrics()
    async with serving(app) as url:
        delivery = Delivery([exporter_at(s3_env, url)], metrics, fast_delivery(batch_size=10))
        async with delivering(delivery):
            delivery.submit([reading(n) for n in range(10)])
            await eventually(lambda: delivery.waiting() == {"s3": 0})
    assert sum(stored) == 10
    assert sample(metrics, "gpuid_export_dropped_total", exporter="s3", reason="rejected") == 0


async def test_a_silent_endpoint_fails_open_within_s3_timeout(s3_env: dict[str, str]) -> None:
    async with silent_endpoint() as silent:
        exporter = exporter_at(s3_env, silent.url, timeout="1s")
        async with asyncio.timeout(10):  # S3_TIMEOUT bounds it, not the peer
            with pytest.raises(ExportError) as err:
                await exporter.open()
    assert type(err.value) is ExportError  # transient
    assert "S3_TIMEOUT" in str(err.value)


async def test_an_upload_to_a_silent_endpoint_is_reported_and_retried(
    s3_env: dict[str, str], log_output: Any
) -> None:
    metrics = Metrics()
    async with silent_endpoint(BUCKET_EXISTS) as silent:  # opens fine, then never answers a PUT
        delivery = Delivery([exporter_at(s3_env, silent.url, timeout="1s")], metrics, fast_delivery())
        async with delivering(delivery, grace=0.2):
            await eventually(lambda: sample(metrics, "gpuid_exporter_up", exporter="s3") == 1)
            delivery.submit([reading(1)])
            await eventually(
                lambda: sample(metrics, "gpuid_export_failure_total", exporter="s3") >= 2, what="retries"
            )
            assert sample(metrics, "gpuid_exporter_up", exporter="s3") == 0
            assert delivery.waiting() == {"s3": 1}
    puts = [r for r in silent.requests() if r.startswith(b"PUT ")]
    assert len(puts) >= 2
    assert not any(b"expect:" in r.lower() for r in puts)  # no wait for a 100 Continue that never comes
    assert "no answer within 1s (S3_TIMEOUT)" in log_output.getvalue()
