"""Bug-report uploads to an S3 endpoint that never answers: every call fails within S3_TIMEOUT."""

from __future__ import annotations

import asyncio

import pytest

from gpuid.bugreport.s3 import S3Destination
from gpuid.errors import ExportError
from gpuid.exporters.s3client import S3Settings
from tests.exporters.standins import http_answer, silent_endpoint
from tests.support.services import AWS_TEST_ENV

STARTED = b"<InitiateMultipartUploadResult><UploadId>u-1</UploadId></InitiateMultipartUploadResult>"


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)


def destination(url: str) -> S3Destination:
    settings = S3Settings("reports", endpoint_url=url, force_path_style=True, region="us-east-1", timeout=1.0)
    return S3Destination(settings, "test")


async def test_starting_an_upload_fails_within_s3_timeout() -> None:
    async with silent_endpoint() as silent:
        async with asyncio.timeout(10):  # S3_TIMEOUT bounds it, not the peer
            with pytest.raises(ExportError, match="S3_TIMEOUT"):
                await destination(silent.url).open("n1", "r.tgz", size=3, sha256="0" * 64)


async def test_a_part_and_the_abort_fail_within_s3_timeout() -> None:
    async with silent_endpoint({b"POST": http_answer(STARTED)}) as silent:  # starts, then silence
        writer = await destination(silent.url).open("n1", "r.tgz", size=3, sha256="0" * 64)
        async with asyncio.timeout(10):
            await writer.write(memoryview(b"abc"))
            with pytest.raises(ExportError, match="S3_TIMEOUT"):
                await writer.commit()  # uploads the last part: PUT, never answered
            with pytest.raises(ExportError, match="S3_TIMEOUT"):
                await writer.abort()  # DELETE, never answered; the client is closed all the same
    assert any(r.startswith(b"DELETE ") for r in silent.requests())
