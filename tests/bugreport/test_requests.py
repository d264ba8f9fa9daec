"""Bug reports in the running service: annotation requests, failures, schedule, the default-off switch."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

from tests.support.app import Sim, eventually, running_app

from .conftest import add_driver_node, annotate, driver_pod_name, pod_files, reports_in, status_of

TS = r"\d{8}_\d{6}"


def enabled(directory: Path, **extra: str) -> dict[str, str]:
    return {
        "BUG_REPORT_ENABLED": "true",
        "BUG_REPORT_DIR": str(directory),
        "BUG_REPORT_TIMEOUT": "10s",
        **extra,
    }


async def test_annotation_request_yields_a_verified_report_and_a_success_status(
    sim: Sim, tmp_path: Path, log_lines: Any
) -> None:
    add_driver_node(sim, "gpu-node-1")
    async with running_app(sim, **enabled(tmp_path)) as run:
        await eventually(lambda: run.sample("gpuid_scans_total", result="success") == 1)
        await annotate(sim, "gpu-node-1", "r1")
        await eventually(
            lambda: (status_of(sim, "gpu-node-1") or {}).get("result") == "success", what="status"
        )
        status = status_of(sim, "gpu-node-1")
        assert status is not None
        [report] = reports_in(tmp_path, "gpu-node-1")
        assert re.fullmatch(rf"nvidia-bug-report-gpu-node-1-r1-{TS}\.log\.gz", report.name)
        data = report.read_bytes()
        assert status["request"] == "r1"
        assert status["file"] == report.name
        assert status["locations"] == [str(report)]
        assert (status["size"], status["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        assert status["error"] == ""
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["time"])
        assert pod_files(sim, "gpu-node-1") == []
        assert run.sample("gpuid_bug_reports_total", trigger="request", result="success") == 1
        assert run.sample("gpuid_bug_report_bytes_total") == len(data)
        assert run.sample("gpuid_bug_report_duration_seconds_count") == 1
        [line] = log_lines("bug report collected")
        assert line["node"] == "gpu-node-1"
        assert line["request_id"] == "r1"
        assert (line["size"], line["sha256"]) == (len(data), status["sha256"])
        assert line["destination"] == [str(report)]
        assert line["pod"] == f"gpu-operator/{driver_pod_name('gpu-node-1')}"

        await annotate(sim, "gpu-node-1", "r2")  # any new value is a new request
        await eventually(lambda: (status_of(sim, "gpu-node-1") or {}).get("request") == "r2")
        await eventually(lambda: (status_of(sim, "gpu-node-1") or {}).get("result") == "success")
        assert len(reports_in(tmp_path, "gpu-node-1")) == 2

    # A restart sees r2 answered by the status: nothing is collected again.
    async with running_app(sim, **enabled(tmp_path)) as run:
        await eventually(lambda: run.sample("gpuid_scans_total", result="success") == 1)
        await eventually(lambda: run.app.drivers is not None and run.app.drivers.informer.synced.is_set())
        assert run.sample("gpuid_bug_reports_total", trigger="request", result="success") == 0
    assert len(reports_in(tmp_path, "gpu-node-1")) == 2


async def test_request_for_a_node_without_driver_pod_fails_clearly(sim: Sim, tmp_path: Path) -> None:
    sim.cluster.add_node("bare", capture="gpuid-gb200-x4")
    async with running_app(sim, **enabled(tmp_path)) as run:
        await annotate(sim, "bare", "ticket-7")
        await eventually(
            lambda: (status_of(sim, "bare") or {}).get("result") == "failed", what="failed status"
        )
        status = status_of(sim, "bare")
        assert status is not None
        assert status["request"] == "ticket-7"
        assert status["error"].startswith("no ready driver pod on node bare")
        assert "app.kubernetes.io/component=nvidia-driver" in status["error"]
        assert run.sample("gpuid_bug_reports_total", trigger="request", result="failed") == 1


async def test_missing_script_is_reported_in_the_status(sim: Sim, tmp_path: Path) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), missing=True)
    async with running_app(sim, **enabled(tmp_path)):
        await annotate(sim, "n1", "r1")
        await eventually(lambda: (status_of(sim, "n1") or {}).get("result") == "failed")
        status = status_of(sim, "n1")
        assert status is not None
        assert "nvidia-bug-report.sh not found in container nvidia-driver-ctr" in status["error"]
        assert reports_in(tmp_path, "n1") == []


async def test_off_by_default_no_driver_watch_and_requests_are_ignored(sim: Sim, tmp_path: Path) -> None:
    add_driver_node(sim, "n1")
    async with running_app(sim) as run:
        await eventually(lambda: run.sample("gpuid_scans_total", result="success") == 1)
        await annotate(sim, "n1", "r1")
        await eventually(lambda: sim.server.open_watches == 2, what="pod and node watches")
        assert run.app.drivers is None
        assert run.app.reporter is None
        assert status_of(sim, "n1") is None
        assert run.sample("gpuid_bug_reports_total", trigger="request", result="success") == 0


async def test_nvidia_smi_failure_collects_one_report_per_min_interval(sim: Sim, tmp_path: Path) -> None:
    add_driver_node(sim, "sick")
    add_driver_node(sim, "nosmi")
    sim.cluster.set_exec("dp-sick", exit_code=9, stderr=b"NVIDIA-SMI has failed")
    sim.cluster.set_exec("dp-nosmi", missing_smi=True)  # not a GPU problem: no report
    env = enabled(tmp_path, BUG_REPORT_ON_FAILURE="true", RETRY_MAX_BACKOFF="0.2s")
    async with running_app(sim, **env) as run:
        await eventually(
            lambda: run.sample("gpuid_bug_reports_total", trigger="failure", result="success") == 1
        )
        await eventually(
            lambda: run.sample("gpuid_scans_total", result="exec_error") >= 6, what="more failures"
        )
        assert run.sample("gpuid_bug_reports_total", trigger="failure", result="success") == 1
        assert len(reports_in(tmp_path, "sick")) == 1
        assert reports_in(tmp_path, "nosmi") == []
        assert re.fullmatch(rf"nvidia-bug-report-sick-{TS}\.log\.gz", reports_in(tmp_path, "sick")[0].name)
        assert status_of(sim, "sick") is None  # only requests are answered on the node


async def test_schedule_collects_every_node_within_the_concurrency_limit(sim: Sim, tmp_path: Path) -> None:
    for i in range(3):
        add_driver_node(sim, f"n{i}", device_plugin=False)
        sim.cluster.pod_files.set_bug_report(driver_pod_name(f"n{i}"), size=10_000, runtime=0.4)
    env = enabled(tmp_path, BUG_REPORT_INTERVAL="0.2s", BUG_REPORT_CONCURRENCY="2", MAX_LOGS_TO_KEEP="1")
    most = 0

    def sample() -> bool:
        nonlocal most
        most = max(most, sim.server.open_exec_sessions)
        return all(len(reports_in(tmp_path, f"n{i}")) == 1 for i in range(3))

    async with running_app(sim, **env) as run:
        await eventually(sample, what="a scheduled report from every node")
        await eventually(
            lambda: run.sample("gpuid_bug_reports_total", trigger="schedule", result="success") >= 6
        )
        sample()
    assert most == 2  # two collections ran at once, never three
    assert all(len(reports_in(tmp_path, f"n{i}")) == 1 for i in range(3))  # MAX_LOGS_TO_KEEP=1


async def test_hung_script_times_out_while_scanning_goes_on(sim: Sim, tmp_path: Path) -> None:
    add_driver_node(sim, "stuck")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("stuck"), runtime=math.inf)
    async with running_app(sim, **enabled(tmp_path, BUG_REPORT_TIMEOUT="1s")) as run:
        await annotate(sim, "stuck", "r1")
        await eventually(lambda: (status_of(sim, "stuck") or {}).get("result") == "running", what="running")
        add_driver_node(sim, "late")  # a pod that appears while the collection hangs is scanned at once
        await eventually(lambda: len(run.uuids("dp-late")) == 4, what="the new pod's records")
        assert (status_of(sim, "stuck") or {}).get("result") == "running"
        await eventually(
            lambda: (status_of(sim, "stuck") or {}).get("result") == "failed", what="the deadline"
        )
        status = status_of(sim, "stuck")
        assert status is not None
        assert status["error"] == "nvidia-bug-report.sh did not finish within 1s"
        assert run.sample("gpuid_bug_reports_total", trigger="request", result="timeout") == 1
        assert pod_files(sim, "stuck") == []


async def test_one_collection_per_node_at_a_time(sim: Sim, tmp_path: Path) -> None:
    add_driver_node(sim, "n1", device_plugin=False)
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), size=10_000, runtime=0.3)
    most = 0

    def second_done() -> bool:
        nonlocal most
        most = max(most, sim.server.open_exec_sessions)
        status = status_of(sim, "n1") or {}
        return status.get("request") == "r2" and status.get("result") == "success"

    async with running_app(sim, **enabled(tmp_path, BUG_REPORT_CONCURRENCY="4")) as run:
        await annotate(sim, "n1", "r1")
        await eventually(lambda: (status_of(sim, "n1") or {}).get("result") == "running")
        await annotate(sim, "n1", "r2")  # arrives while r1 runs: waits for it, is not dropped
        await eventually(second_done, what="the second request")
        assert run.sample("gpuid_bug_reports_total", trigger="request", result="success") == 2
    assert most == 1
    assert [re.search(r"-(r\d)-", p.name).group(1) for p in reports_in(tmp_path, "n1")] == ["r1", "r2"]  # type: ignore[union-attr]
