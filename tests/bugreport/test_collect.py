"""Collecting one report over exec: verified download, every failure path, cleanup, retention."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gpuid.bugreport.collect import collect_report, report_name, safe_name
from gpuid.bugreport.sinks import LocalDirectory
from gpuid.errors import BugReportError
from gpuid.metrics import Metrics
from tests.support.app import Sim, eventually

from .conftest import add_driver_node, driver_pod_name, driver_target, pod_files, reports_in

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


async def collect(
    sim: Sim, kube: Any, node: str, directory: Path, *, timeout: float = 10.0, keep: int = 5
) -> Any:
    name = report_name(node, "r1", WHEN)
    return await collect_report(
        kube.core_ws,
        driver_target(sim, node),
        name=name,
        timeout=timeout,
        destinations=[LocalDirectory(directory, keep)],
    )


def test_report_names_follow_the_script_convention_and_are_shell_safe() -> None:
    assert report_name("gpu-node-1", "r1", WHEN) == "nvidia-bug-report-gpu-node-1-r1-20260304_050607.log"
    assert report_name("gpu-node-1", "", WHEN) == "nvidia-bug-report-gpu-node-1-20260304_050607.log"
    assert safe_name("ticket 42; rm -rf /") == "ticket_42_rm_-rf"
    assert safe_name("../..") == "_"


async def test_report_is_downloaded_verified_and_removed_from_the_pod(
    sim: Sim, kube: Any, tmp_path: Path
) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), size=700_000)
    collected = await collect(sim, kube, "n1", tmp_path)
    stored = tmp_path / "n1" / "nvidia-bug-report-n1-r1-20260304_050607.log.gz"
    assert collected.locations == (str(stored),)
    data = stored.read_bytes()
    assert (collected.size, collected.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert abs(collected.size - 700_000) < 100
    assert pod_files(sim, "n1") == []
    assert [p.name for p in (tmp_path / "n1").iterdir()] == [stored.name]  # no temp file left


@pytest.mark.parametrize(
    ("behaviour", "phase"),
    [({"runtime": math.inf}, "nvidia-bug-report.sh"), ({"stall_download_after": 100_000}, "download")],
    ids=["hung-script", "hung-download"],
)
async def test_hung_script_or_download_is_cut_at_the_deadline_and_cleaned_up(
    sim: Sim, kube: Any, tmp_path: Path, behaviour: dict[str, Any], phase: str
) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), size=400_000, **behaviour)
    with pytest.raises(BugReportError) as caught:
        await collect(sim, kube, "n1", tmp_path, timeout=1.0)
    assert caught.value.result == "timeout"
    assert str(caught.value) == f"{phase} did not finish within 1s"
    assert pod_files(sim, "n1") == []  # the partial report was removed from the pod
    assert list((tmp_path / "n1").glob("*")) == []  # and nothing partial was kept here
    await eventually(lambda: sim.server.open_exec_sessions == 0, what="the server to see the exec closed")


async def test_missing_script_fails_clearly(sim: Sim, kube: Any, tmp_path: Path) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), missing=True)
    with pytest.raises(BugReportError) as caught:
        await collect(sim, kube, "n1", tmp_path)
    assert caught.value.result == "failed"
    message = str(caught.value)
    assert message.startswith("nvidia-bug-report.sh not found in container nvidia-driver-ctr of ")
    assert "nvidia-driver-daemonset-n1" in message
    assert "not found" in message


async def test_failing_script_fails_with_its_exit_code_and_stderr(
    sim: Sim, kube: Any, tmp_path: Path
) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), exit_code=2)
    with pytest.raises(BugReportError, match=r"failed \(exit code 2\): ERROR: could not collect"):
        await collect(sim, kube, "n1", tmp_path)
    assert pod_files(sim, "n1") == []


async def test_corrupted_download_is_refused_and_nothing_is_kept(sim: Sim, kube: Any, tmp_path: Path) -> None:
    add_driver_node(sim, "n1")
    # cat's stdout replaced by other bytes of the same length: size matches, the checksum does not.
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), size=5_000)
    name = report_name("n1", "r1", WHEN)

    class Corrupting(LocalDirectory):
        async def open(self, node: str, file_name: str, *, size: int, sha256: str) -> Any:
            sim.cluster.set_exec(driver_pod_name("n1"), stdout=b"x" * size)  # affects the next exec: cat
            return await super().open(node, file_name, size=size, sha256=sha256)

    with pytest.raises(BugReportError, match="sha256 mismatch"):
        await collect_report(
            kube.core_ws,
            driver_target(sim, "n1"),
            name=name,
            timeout=10,
            destinations=[Corrupting(tmp_path, 5)],
        )
    sim.cluster.set_exec(driver_pod_name("n1"))
    assert list((tmp_path / "n1").glob("*")) == []


async def test_retention_keeps_exactly_max_logs_to_keep_newest_reports(
    sim: Sim, kube: Any, tmp_path: Path
) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), size=2_000)
    directory = LocalDirectory(tmp_path, keep=3)
    names = []
    for i in range(5):
        name = report_name("n1", f"r{i}", WHEN)
        names.append(name + ".gz")
        await collect_report(
            kube.core_ws, driver_target(sim, "n1"), name=name, timeout=10, destinations=[directory]
        )
    assert [p.name for p in reports_in(tmp_path, "n1")] == sorted(names[2:])
    assert pod_files(sim, "n1") == []


async def test_cleanup_failure_is_counted_logged_and_does_not_fail_the_report(
    sim: Sim, kube: Any, tmp_path: Path, log_lines: Any
) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.fail_requests(1, 500, path_contains="command=rm")
    metrics = Metrics()
    collected = await collect_report(
        kube.core_ws,
        driver_target(sim, "n1"),
        name=report_name("n1", "r1", WHEN),
        timeout=10,
        destinations=[LocalDirectory(tmp_path, 5)],
        metrics=metrics,
    )
    assert [str(p) for p in reports_in(tmp_path, "n1")] == list(collected.locations)
    assert pod_files(sim, "n1") == [f"/tmp/{collected.file_name}"]  # left behind, and said so:
    assert metrics.registry.get_sample_value("gpuid_bug_report_errors_total", {"stage": "cleanup"}) == 1
    [line] = log_lines("could not remove the bug report from the pod")
    assert (line["node"], line["pod"]) == ("n1", f"gpu-operator/{driver_pod_name('n1')}")
    assert "HTTP 500" in line["error"]
