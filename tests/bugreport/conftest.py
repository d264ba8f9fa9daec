"""Fixtures for bug reports: GPU nodes with driver pods, annotating nodes, logs, moto's S3.

Nodes are annotated through the real client with a merge patch, which is
what ``kubectl annotate`` sends; the status gpuid writes back is read from
the simulated cluster's node object.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gpuid.bugreport.collect import Target
from gpuid.bugreport.status import BUG_REPORT_REQUEST, BUG_REPORT_STATUS
from gpuid.kube.client import connect
from gpuid.kube.objects import slim_pod
from gpuid.log import configure_logging
from tests.support.app import DRIVER_LABELS, Sim, add_driver_node, driver_pod_name
from tests.support.services import S3Server

__all__ = ["DRIVER_LABELS", "S3Server", "add_driver_node", "driver_pod_name"]


def driver_target(sim: Sim, node: str) -> Target:
    pod = slim_pod(sim.cluster.pod(driver_pod_name(node)))
    return Target(node, pod, "nvidia-driver-ctr")


def pod_files(sim: Sim, node: str) -> list[str]:
    return sim.cluster.pod_files.files("gpu-operator", driver_pod_name(node))


def status_of(sim: Sim, node: str) -> dict[str, Any] | None:
    raw = (sim.cluster.node(node)["metadata"].get("annotations") or {}).get(BUG_REPORT_STATUS)
    return json.loads(raw) if raw else None


async def annotate(sim: Sim, node: str, request_id: str) -> None:
    """``kubectl annotate node <node> gpuid.io/bug-report-request=<id> --overwrite``."""
    clients = await connect(str(sim.kubeconfig))
    try:
        body = {"metadata": {"annotations": {BUG_REPORT_REQUEST: request_id}}}
        await clients.core.patch_node(node, body, _content_type="application/merge-patch+json")
    finally:
        await clients.close()


@pytest.fixture
async def kube(sim: Sim) -> AsyncIterator[Any]:
    """Clients on the simulated API server (``.core``, ``.core_ws``)."""
    clients = await connect(str(sim.kubeconfig))
    try:
        yield clients
    finally:
        await clients.close()


@pytest.fixture(autouse=True)
def _json_logs() -> io.StringIO:
    """Log lines as JSON into a buffer that stays open for the whole test (see tests/exporters)."""
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    return buffer


@pytest.fixture
def log_lines(_json_logs: io.StringIO) -> Any:
    def lines(event: str | None = None) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in _json_logs.getvalue().splitlines() if line.strip()]
        return [p for p in parsed if event is None or p.get("event") == event]

    return lines


def reports_in(directory: Path, node: str) -> list[Path]:
    return sorted((directory / node).glob("nvidia-bug-report-*.log.gz"))
