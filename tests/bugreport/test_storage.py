"""Bug-report storage is input too: links, look-alikes, a full disk and oversized reports cost one report.

The volume under ``BUG_REPORT_DIR`` is shared, so whatever is found there
(a dangling link or a directory named like a report, a node directory that
is a link to elsewhere) must neither crash gpuid nor reach outside the
directory. A full disk is a real one: a small tmpfs mounted for the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gpuid.bugreport.collect import collect_report, report_name
from gpuid.bugreport.sinks import Destination, LocalDirectory, ReportWriter
from gpuid.errors import BugReportError
from gpuid.metrics import Metrics
from tests.support.app import Sim, eventually, running_app, sample

from .conftest import add_driver_node, annotate, driver_pod_name, driver_target, pod_files, status_of
from .test_requests import enabled

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
OLD = "nvidia-bug-report-n1-old-20200101_000000.log.gz"


async def collect(
    sim: Sim, kube: Any, node: str, directory: LocalDirectory, *, request: str = "r1", max_bytes: int = 2**30
) -> Any:
    return await collect_report(
        kube.core_ws,
        driver_target(sim, node),
        name=report_name(node, request, WHEN),
        timeout=10,
        destinations=[directory],
        metrics=directory._metrics,
        max_bytes=max_bytes,
    )


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def storage_errors(metrics: Metrics) -> float:
    return sample(metrics, "gpuid_bug_report_errors_total", stage="storage")


async def test_links_and_directories_named_like_reports_are_left_alone_by_retention(
    sim: Sim, kube: Any, tmp_path: Path
) -> None:
    add_driver_node(sim, "n1")
    node_dir = tmp_path / "n1"
    node_dir.mkdir()
    (node_dir / OLD).write_bytes(b"old")
    os.utime(node_dir / OLD, (0, 0))
    (node_dir / "nvidia-bug-report-n1-dangling-20200101_000000.log.gz").symlink_to("/nonexistent/x")
    outside = tmp_path / "elsewhere.gz"
    outside.write_bytes(b"not gpuid's")
    (node_dir / "nvidia-bug-report-n1-link-20200101_000000.log.gz").symlink_to(outside)
    (node_dir / "nvidia-bug-report-n1-dir-20200101_000000.log.gz").mkdir()
    (node_dir / ".nvidia-bug-report-n1-x.log.gz.partial").symlink_to(outside)
    metrics = Metrics()
    collected = await collect(sim, kube, "n1", LocalDirectory(tmp_path, keep=1, metrics=metrics))
    assert listing(node_dir) == sorted(
        [
            ".nvidia-bug-report-n1-x.log.gz.partial",
            "nvidia-bug-report-n1-dangling-20200101_000000.log.gz",
            "nvidia-bug-report-n1-dir-20200101_000000.log.gz",
            "nvidia-bug-report-n1-link-20200101_000000.log.gz",
            collected.file_name,  # the one regular report kept; OLD was the one removed
        ]
    )
    assert outside.read_bytes() == b"not gpuid's"
    assert storage_errors(metrics) == 0


async def test_a_node_directory_that_is_a_link_is_refused_and_nothing_outside_is_touched(
    sim: Sim, kube: Any, tmp_path: Path, log_lines: Any
) -> None:
    add_driver_node(sim, "n1")
    root, outside = tmp_path / "reports", tmp_path / "precious"
    root.mkdir()
    outside.mkdir()
    for i in range(3):
        (outside / f"nvidia-bug-report-n1-r{i}-20200101_000000.log.gz").write_bytes(b"keep me")
    (outside / ".nvidia-bug-report-n1-r9.log.gz.partial").write_bytes(b"keep me too")
    before = listing(outside)
    (root / "n1").symlink_to(outside)
    metrics = Metrics()
    with pytest.raises(BugReportError, match="a symbolic link, refused"):
        await collect(sim, kube, "n1", LocalDirectory(root, keep=1, metrics=metrics))
    assert listing(outside) == before
    assert all(p.read_bytes().startswith(b"keep me") for p in outside.iterdir())
    assert storage_errors(metrics) == 1
    [line] = log_lines("bug report storage failed")
    assert (line["node"], line["action"], line["level"]) == ("n1", "open", "error")
    assert pod_files(sim, "n1") == []  # the pod's copy is still cleaned up


async def test_bug_report_dir_is_created_when_missing(sim: Sim, kube: Any, tmp_path: Path) -> None:
    add_driver_node(sim, "n1")
    collected = await collect(sim, kube, "n1", LocalDirectory(tmp_path / "not" / "yet", keep=5))
    assert listing(tmp_path / "not" / "yet" / "n1") == [collected.file_name]


async def test_a_report_announced_over_the_cap_is_never_downloaded(
    sim: Sim, kube: Any, tmp_path: Path
) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), size=300_000)
    with pytest.raises(BugReportError, match=r"over BUG_REPORT_MAX_BYTES \(100000\): not downloaded"):
        await collect(sim, kube, "n1", LocalDirectory(tmp_path, keep=5), max_bytes=100_000)
    assert not (tmp_path / "n1").exists()  # refused before the destination was even opened
    assert pod_files(sim, "n1") == []


async def test_a_download_longer_than_announced_is_cut_and_discarded(
    sim: Sim, kube: Any, tmp_path: Path
) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), size=5_000)

    class Growing(LocalDirectory):
        async def open(self, node: str, file_name: str, *, size: int, sha256: str) -> ReportWriter:
            sim.cluster.set_exec(driver_pod_name("n1"), stdout=b"x" * (size * 100))  # the next exec: cat
            return await super().open(node, file_name, size=size, sha256=sha256)

    with pytest.raises(BugReportError, match="download larger than the"):
        await collect(sim, kube, "n1", Growing(tmp_path, keep=5))
    sim.cluster.set_exec(driver_pod_name("n1"))
    assert listing(tmp_path / "n1") == []


async def test_a_final_name_taken_by_a_directory_fails_that_report_only(
    sim: Sim, kube: Any, tmp_path: Path
) -> None:
    add_driver_node(sim, "n1")
    (tmp_path / "n1" / (report_name("n1", "r1", WHEN) + ".gz")).mkdir(parents=True)
    (tmp_path / "n1" / (report_name("n1", "r1", WHEN) + ".gz") / "x").write_bytes(b"")
    metrics = Metrics()
    with pytest.raises(BugReportError, match="store: bug report storage"):
        await collect(sim, kube, "n1", LocalDirectory(tmp_path, keep=5, metrics=metrics))
    assert listing(tmp_path / "n1") == [report_name("n1", "r1", WHEN) + ".gz"]  # no partial file left
    assert storage_errors(metrics) == 1
    collected = await collect(
        sim, kube, "n1", LocalDirectory(tmp_path, keep=5, metrics=metrics), request="r2"
    )
    assert collected.file_name in listing(tmp_path / "n1")


# -- a full disk ---------------------------------------------------------------------------------------
@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk that really fills up."""
    mount = tmp_path / "volume"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        pytest.fail(f"cannot mount a tmpfs for the disk-full tests (run them as root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_reports_that_fill_the_disk_mid_download_fail_as_disk_full_and_leave_nothing(
    sim: Sim, kube: Any, small_volume: Path
) -> None:
    for node in ("n1", "n2"):
        add_driver_node(sim, node)
        sim.cluster.pod_files.set_bug_report(driver_pod_name(node), size=1_200_000)
    metrics = Metrics()
    directory = LocalDirectory(small_volume, keep=5, metrics=metrics)
    # Each fits alone, so both pass the free-space check; together they do not.
    results = await asyncio.gather(
        collect(sim, kube, "n1", directory), collect(sim, kube, "n2", directory), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures
    assert all(isinstance(f, BugReportError) and "disk full" in str(f) for f in failures), failures
    kept = sorted(p.name for node in ("n1", "n2") for p in (small_volume / node).iterdir())
    assert kept == sorted(r.file_name for r in results if not isinstance(r, BaseException))  # no partials
    assert storage_errors(metrics) == len(failures)
    assert pod_files(sim, "n1") == pod_files(sim, "n2") == []


async def test_disk_full_is_said_in_the_status_and_the_log_and_gpuid_goes_on(
    sim: Sim, small_volume: Path, log_lines: Any
) -> None:
    add_driver_node(sim, "n1")
    sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), size=3_000_000)
    async with running_app(sim, **enabled(small_volume)) as run:
        await annotate(sim, "n1", "r1")
        await eventually(lambda: (status_of(sim, "n1") or {}).get("result") == "failed")
        status = status_of(sim, "n1")
        assert status is not None
        assert "disk full" in status["error"]
        assert "3000" in status["error"]  # how much was needed
        [line] = log_lines("bug report failed")
        assert (line["node"], line["request_id"]) == ("n1", "r1")
        assert "disk full" in line["error"]
        assert run.sample("gpuid_bug_report_errors_total", stage="storage") == 1
        sim.cluster.pod_files.set_bug_report(driver_pod_name("n1"), size=100_000)
        await annotate(sim, "n1", "r2")  # the next request, once it fits, just works
        await eventually(lambda: (status_of(sim, "n1") or {}).get("result") == "success")
        assert pod_files(sim, "n1") == []


# -- the feature fails, the process does not -----------------------------------------------------------
class BrokenDestination:
    """A destination with a bug in it (not a storage error: an exception nobody expects)."""

    name = "broken"

    async def open(self, node: str, file_name: str, *, size: int, sha256: str) -> ReportWriter:
        raise RuntimeError("a bug in a destination")


async def test_a_bug_in_the_collector_fails_one_report_and_the_reporter_keeps_going(
    sim: Sim, tmp_path: Path, log_lines: Any
) -> None:
    add_driver_node(sim, "n1")
    (tmp_path / "n1").mkdir()
    (tmp_path / "n1" / OLD).symlink_to("/nonexistent")  # crashed retention (and looped) before
    async with running_app(sim, **enabled(tmp_path, MAX_LOGS_TO_KEEP="1")) as run:
        await eventually(lambda: run.app.reporter is not None, what="the reporter")
        reporter = run.app.reporter
        assert reporter is not None
        working: list[Destination] = list(reporter.destinations)
        reporter.destinations[:] = [BrokenDestination()]
        await annotate(sim, "n1", "r1")
        await eventually(lambda: (status_of(sim, "n1") or {}).get("result") == "failed")
        status = status_of(sim, "n1")
        assert status is not None
        assert status["error"] == "unexpected error: RuntimeError: a bug in a destination"
        assert run.sample("gpuid_bug_report_errors_total", stage="internal") == 1
        [line] = log_lines("bug report collection raised an unexpected error")
        assert (line["node"], line["error_type"]) == ("n1", "RuntimeError")
        assert "test_storage.py" in line["traceback"]
        reporter.destinations[:] = working
        await annotate(sim, "n1", "r2")
        await eventually(lambda: (status_of(sim, "n1") or {}).get("result") == "success")
        assert not run.task.done()
    assert listing(tmp_path / "n1") == sorted([OLD, status_of(sim, "n1")["file"]])  # type: ignore[index]
