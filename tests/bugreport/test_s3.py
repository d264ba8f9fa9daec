"""Bug reports to S3 (moto's server over HTTP): multipart upload, metadata, aborts."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import aioboto3

from tests.support.app import Sim, eventually, running_app

from .conftest import S3Server, add_driver_node, annotate, driver_pod_name, pod_files, reports_in, status_of


def s3_env(server: S3Server, directory: Path) -> dict[str, str]:
    return {
        "BUG_REPORT_ENABLED": "true",
        "BUG_REPORT_S3": "true",
        "BUG_REPORT_DIR": str(directory),
        "BUG_REPORT_TIMEOUT": "20s",
        "S3_BUCKET": f"gpuid-{uuid.uuid4().hex[:12]}",
        "S3_ENDPOINT_URL": server.endpoint,
        "S3_FORCE_PATH_STYLE": "true",
        "S3_REGION": "us-east-1",
        "S3_PREFIX": "fleet",
        "S3_TIMEOUT": "5s",
    }


def client(env: dict[str, str]) -> Any:
    return aioboto3.Session().client("s3", endpoint_url=env["S3_ENDPOINT_URL"], region_name="us-east-1")


async def test_request_is_uploaded_multipart_with_its_checksum_and_kept_locally(
    sim: Sim, s3_server: S3Server, tmp_path: Path
) -> None:
    env = s3_env(s3_server, tmp_path)
    async with client(env) as s3:
        await s3.create_bucket(Bucket=env["S3_BUCKET"])
    add_driver_node(sim, "gpu-node-1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("gpu-node-1"), size=12 * 1024 * 1024)  # 3 parts
    async with running_app(sim, **env):
        await annotate(sim, "gpu-node-1", "r1")
        await eventually(lambda: (status_of(sim, "gpu-node-1") or {}).get("result") == "success", timeout=40)
    status = status_of(sim, "gpu-node-1")
    assert status is not None
    [local] = reports_in(tmp_path, "gpu-node-1")
    key = f"fleet/bug-reports/test/gpu-node-1/{local.name}"
    assert status["locations"] == [str(local), f"s3://{env['S3_BUCKET']}/{key}"]
    async with client(env) as s3:
        got = await s3.get_object(Bucket=env["S3_BUCKET"], Key=key)
        body = await got["Body"].read()
        uploads = await s3.list_multipart_uploads(Bucket=env["S3_BUCKET"])
    digest = hashlib.sha256(body).hexdigest()
    assert (len(body), digest) == (status["size"], status["sha256"])
    assert body == local.read_bytes()
    assert got["Metadata"]["sha256"] == digest
    assert got["Metadata"]["size"] == str(len(body))
    assert got["ContentType"] == "application/gzip"
    assert got["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    assert uploads.get("Uploads", []) == []
    assert pod_files(sim, "gpu-node-1") == []


async def test_failed_download_aborts_the_upload(sim: Sim, s3_server: S3Server, tmp_path: Path) -> None:
    env = s3_env(s3_server, tmp_path) | {"BUG_REPORT_TIMEOUT": "2s"}
    async with client(env) as s3:
        await s3.create_bucket(Bucket=env["S3_BUCKET"])
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(
        driver_pod_name("n1"), size=7 * 1024 * 1024, stall_download_after=6 * 1024 * 1024
    )
    async with running_app(sim, **env) as run:
        await annotate(sim, "n1", "r1")
        await eventually(lambda: (status_of(sim, "n1") or {}).get("result") == "failed", timeout=30)
        assert run.sample("gpuid_bug_reports_total", trigger="request", result="timeout") == 1
    status = status_of(sim, "n1")
    assert status is not None
    assert status["error"] == "download did not finish within 2s"
    async with client(env) as s3:
        listed = await s3.list_objects_v2(Bucket=env["S3_BUCKET"])
        uploads = await s3.list_multipart_uploads(Bucket=env["S3_BUCKET"])
    assert listed.get("Contents", []) == []
    assert uploads.get("Uploads", []) == []  # the part already sent was discarded with the upload
    assert reports_in(tmp_path, "n1") == []
    assert pod_files(sim, "n1") == []


async def test_missing_bucket_fails_the_request_with_a_hint(
    sim: Sim, s3_server: S3Server, tmp_path: Path
) -> None:
    env = s3_env(s3_server, tmp_path)  # bucket never created
    add_driver_node(sim, "n1")
    async with running_app(sim, **env):
        await annotate(sim, "n1", "r1")
        await eventually(lambda: (status_of(sim, "n1") or {}).get("result") == "failed", timeout=30)
    status = status_of(sim, "n1")
    assert status is not None
    assert "NoSuchBucket" in status["error"]
    assert "check S3_BUCKET" in status["error"]
    assert reports_in(tmp_path, "n1") == []  # the local copy is discarded too: all or nothing
    assert pod_files(sim, "n1") == []
