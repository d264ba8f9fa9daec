"""Crusoe-compatible API mode against a small local aiohttp server that records the calls."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.app import Sim, eventually, running_app
from tests.support.services import serving

from .conftest import add_driver_node, driver_pod_name, pod_files

VM = "4c4c4544-0042-3010-8052-b4c04f4e3432"


@dataclass
class VendorApi:
    """Hands out tasks from ``events`` (one per poll) and records every upload."""

    events: list[str] = field(default_factory=list)
    polls: list[dict[str, str]] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def check_tasks(self, request: web.Request) -> web.Response:
        self.polls.append(dict(request.query))
        if self.events:
            return web.json_response({"status": "success", "event_id": self.events.pop(0)})
        return web.json_response({"status": "no_task"})

    async def upload_logs(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            self.uploads.append({"kind": "json", **await request.json()})
        else:
            fields: dict[str, Any] = {"kind": "multipart"}
            async for part in await request.multipart():
                data = await part.read()  # type: ignore[union-attr]
                fields[part.name or ""] = data if part.filename else data.decode()  # type: ignore[union-attr]
                if part.filename:
                    fields["filename"] = part.filename
            self.uploads.append(fields)
        return web.json_response({"status": "ok"})


@pytest.fixture
async def vendor() -> AsyncIterator[VendorApi]:
    api = VendorApi()
    app = web.Application()
    app.router.add_get("/v1/check-tasks", api.check_tasks)
    app.router.add_post("/v1/upload-logs", api.upload_logs)
    async with serving(app) as url:
        api.url = f"{url}/v1"
        yield api


def api_env(vendor: VendorApi, **extra: str) -> dict[str, str]:
    return {
        "BUG_REPORT_ENABLED": "true",
        "API_BASE_URL": vendor.url,
        "API_POLL_INTERVAL": "0.1s",
        "VM_ID": VM,
        "NODE_NAME": "gpu-node-1",
        "BUG_REPORT_TIMEOUT": "10s",
        **extra,
    }


async def test_task_from_the_api_is_collected_and_uploaded_as_multipart(sim: Sim, vendor: VendorApi) -> None:
    add_driver_node(sim, "gpu-node-1")
    vendor.events.append("evt-1")
    async with running_app(sim, **api_env(vendor)) as run:
        await eventually(lambda: len(vendor.uploads) == 1, what="the upload")
        await eventually(lambda: len(vendor.polls) >= 3, what="polling to go on")
        assert run.sample("gpuid_bug_reports_total", trigger="api", result="success") == 1
    [upload] = vendor.uploads
    assert upload["kind"] == "multipart"
    assert {k: upload[k] for k in ("vm_id", "event_id", "node_name", "status")} == {
        "vm_id": VM,
        "event_id": "evt-1",
        "node_name": "gpu-node-1",
        "status": "success",
    }
    assert upload["filename"].startswith("nvidia-bug-report-gpu-node-1-evt-1-")
    assert upload["filename"].endswith(".log.gz")
    assert upload["file"][:2] == b"\x1f\x8b"  # gzip
    assert hashlib.sha256(upload["file"]).hexdigest() in upload["message"]
    assert vendor.polls[0] == {"vm_id": VM}
    assert pod_files(sim, "gpu-node-1") == []


async def test_failed_collection_is_reported_as_json(sim: Sim, vendor: VendorApi, tmp_path: Path) -> None:
    add_driver_node(sim, "gpu-node-1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("gpu-node-1"), missing=True)
    vendor.events.append("evt-2")
    async with running_app(sim, **api_env(vendor, BUG_REPORT_DIR=str(tmp_path))) as run:
        await eventually(lambda: len(vendor.uploads) == 1, what="the failure report")
        assert run.sample("gpuid_bug_reports_total", trigger="api", result="failed") == 1
    [upload] = vendor.uploads
    assert upload["kind"] == "json"
    assert {k: upload[k] for k in ("vm_id", "event_id", "node_name", "status")} == {
        "vm_id": VM,
        "event_id": "evt-2",
        "node_name": "gpu-node-1",
        "status": "failed",
    }
    assert "nvidia-bug-report.sh not found" in upload["message"]


async def test_unreachable_api_is_counted_and_polling_goes_on(sim: Sim, vendor: VendorApi) -> None:
    add_driver_node(sim, "gpu-node-1")
    env = api_env(vendor, API_BASE_URL=vendor.url.replace("/v1", "/nope"))
    async with running_app(sim, **env) as run:
        await eventually(lambda: run.sample("gpuid_bug_report_errors_total", stage="api") >= 2)
        assert vendor.uploads == []
