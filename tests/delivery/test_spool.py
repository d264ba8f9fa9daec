"""The on-disk spool on its own, and on real damaged files: nothing on disk can take the service down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpuid.delivery.segment import HEADER, reading_from_dict
from gpuid.delivery.spool import Spool
from gpuid.delivery.spoollane import SpoolLane
from gpuid.errors import ConfigError, SpoolCorruptError
from gpuid.metrics import Metrics
from tests.support.app import sample
from tests.support.records import reading

REPO = Path(__file__).parent.parent.parent


def spool_at(root: Path, max_bytes: int = 1 << 20, segment_records: int = 1000) -> Spool:
    return Spool(root, max_bytes, segment_records, metrics=Metrics())


def lane_of(spool: Spool, name: str = "pg") -> SpoolLane:
    lane = spool.lane(name)
    assert lane is not None
    return lane


def spool_errors(spool: Spool, error: str, name: str = "pg") -> float:
    return sample(spool.metrics, "gpuid_spool_errors_total", exporter=name, error=error)


def corrupt_dropped(spool: Spool, name: str = "pg") -> float:
    return sample(spool.metrics, "gpuid_export_dropped_total", exporter=name, reason="spool_corrupt")


def test_reading_round_trips_through_json() -> None:
    for n in (1, 2):
        r = reading(n)
        assert reading_from_dict(r.to_dict()) == r


@pytest.mark.parametrize(
    "change",
    [
        lambda d: [d],
        lambda d: 42,
        lambda d: {k: v for k, v in d.items() if k != "gpu_uuid"},
        lambda d: d | {"gpu_index": "1"},
        lambda d: d | {"module_id": True},
        lambda d: d | {"gpu_serial": 7},
        lambda d: d | {"mig_devices": "none"},
        lambda d: d | {"mig_devices": [[1]]},
        lambda d: d | {"mig_devices": [{"uuid": 1}]},
        lambda d: d | {"observed_at": "yesterday"},
    ],
)
def test_a_line_that_is_not_a_record_is_refused(change: Callable[[dict[str, Any]], Any]) -> None:
    with pytest.raises(SpoolCorruptError):
        reading_from_dict(change(reading(1).to_dict()))


def test_segments_survive_a_restart_in_order(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    lane = lane_of(spool)
    assert lane.append([reading(1), reading(2)], loaded=True)
    assert lane.append([reading(3)], loaded=False)
    spool.close()
    with (lane.dir / "0000000000000001.jsonl").open("ab") as torn:
        torn.write(b'{"cluster": "half a li')  # the process died mid-write

    again = spool_at(tmp_path)
    lane = lane_of(again)
    assert lane.unloaded_records == 4  # the torn line stood for a record too
    assert again.used == lane.bytes > 0
    first, second = lane.load_next(), lane.load_next()
    assert [r.gpu_uuid for r in first[0] + second[0]] == [reading(n).gpu_uuid for n in (1, 2, 3)]
    assert (first[1], second[1]) == (0, 1)  # the torn record is lost, counted
    assert corrupt_dropped(again) == 1
    lane.ack(1)  # half of the first segment: it stays on disk
    assert len(list(lane.dir.glob("*.jsonl"))) == 2
    lane.ack(2)
    assert not list(lane.dir.glob("*.jsonl"))
    assert again.used == 0
    assert lane.append([reading(4)], loaded=True)
    assert [p.name for p in lane.dir.glob("*.jsonl")] == ["0000000000000002.jsonl"]  # numbering goes on
    again.close()


def test_appends_share_a_segment_until_it_rolls(tmp_path: Path) -> None:
    spool = spool_at(tmp_path, segment_records=4)
    lane = lane_of(spool)
    for n in range(10):
        assert lane.append([reading(n)], loaded=True)
    assert len(list(lane.dir.glob("*.jsonl"))) == 3  # 4 + 4 + 2
    lane.ack(10)
    assert not list(lane.dir.glob("*.jsonl"))
    assert lane.bytes == spool.used == 0
    spool.close()


def test_each_exporter_has_its_own_budget(tmp_path: Path) -> None:
    spool = spool_at(tmp_path, 4096)
    try:
        a, b = lane_of(spool, "a"), lane_of(spool, "b")
        written = 0
        while a.append([reading(written)], loaded=False):
            written += 1
        assert written > 0
        assert not a.append([reading(0)], loaded=False)  # a is full...
        assert b.append([reading(0)], loaded=False)  # ...and b still has all of its room
    finally:
        spool.close()


def test_one_process_per_spool_dir(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    with pytest.raises(ConfigError, match="in use"):
        spool_at(tmp_path)
    spool.close()


def test_an_unusable_root_runs_without_a_spool(tmp_path: Path, log_output: Any) -> None:
    (tmp_path / "file").write_text("")
    spool = spool_at(tmp_path / "file" / "spool")
    assert spool.lane("pg") is None
    assert spool_errors(spool, "unusable") == 1
    assert "running without a spool" in log_output.getvalue()
    spool.close()


def test_a_lock_file_that_is_a_fifo_does_not_hang_start_up(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".lock")
    spool = spool_at(tmp_path)
    assert spool.lane("pg") is None
    spool.close()


def test_an_unusable_lane_dir_costs_only_that_lane(tmp_path: Path) -> None:
    (tmp_path / "pg").write_text("not a directory")
    spool = spool_at(tmp_path)
    assert spool.lane("pg") is None
    assert spool_errors(spool, "unusable") == 1
    assert lane_of(spool, "s3").append([reading(1)], loaded=True)
    spool.close()


def write_segment(directory: Path, seq: int, lines: list[bytes], header: bytes = HEADER) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{seq:016d}.jsonl"
    path.write_bytes(header + b"".join(line + b"\n" for line in lines))
    return path


def record_line(n: int) -> bytes:
    return reading(n).to_json().encode()


def oversized(path: Path) -> None:
    path.write_bytes(HEADER)
    os.truncate(path, 33 * 1024 * 1024)  # sparse: costs no disk


DAMAGE: dict[str, Callable[[Path], None]] = {
    "fifo": os.mkfifo,
    "symlink to /dev/zero": lambda p: p.symlink_to("/dev/zero"),
    "dangling symlink": lambda p: p.symlink_to(p.parent / "gone"),
    "directory": lambda p: p.mkdir(),
    "larger than a segment may be": oversized,
    "unknown header": lambda p: p.write_bytes(b'{"format": 2}\n' + record_line(9) + b"\n"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_segment_is_set_aside_and_the_rest_recovered(
    tmp_path: Path, damage: str, log_output: Any
) -> None:
    lane_dir = tmp_path / "pg"
    write_segment(lane_dir, 1, [record_line(1)])
    DAMAGE[damage](lane_dir / f"{2:016d}.jsonl")
    write_segment(lane_dir, 3, [record_line(3)])

    spool = spool_at(tmp_path)  # returns: a FIFO would hang an ordinary open, /dev/zero never ends
    lane = lane_of(spool)
    assert lane.unloaded_records == 2
    assert [r.gpu_uuid for r in lane.load_next()[0] + lane.load_next()[0]] == [
        reading(1).gpu_uuid,
        reading(3).gpu_uuid,
    ]
    assert spool_errors(spool, "set_aside") == 1
    assert corrupt_dropped(spool) == (1 if damage == "unknown header" else 0)
    assert (lane_dir / f"{2:016d}.corrupt").exists() or (lane_dir / f"{2:016d}.corrupt").is_symlink()
    [event] = [
        e for line in log_output.getvalue().splitlines() if (e := json.loads(line))["level"] == "error"
    ]
    assert event["event"] == "spool segment set aside"
    assert event["file"] == f"{2:016d}.jsonl"
    assert lane.append([reading(4)], loaded=True)  # and it goes on writing
    assert (lane_dir / f"{4:016d}.jsonl").exists()
    spool.close()


def test_a_bad_line_costs_that_line_not_its_segment(tmp_path: Path, log_output: Any) -> None:
    lines = [record_line(1), b"[1, 2]", record_line(2), b'{"cluster": 5}', b"{not json", record_line(3)]
    write_segment(tmp_path / "pg", 1, lines)
    spool = spool_at(tmp_path)
    lane = lane_of(spool)
    records, lost = lane.load_next()
    assert [r.gpu_uuid for r in records] == [reading(n).gpu_uuid for n in (1, 2, 3)]
    assert lost == 3
    assert spool_errors(spool, "bad_line") == 3
    assert corrupt_dropped(spool) == 3
    assert '"spool lines skipped"' in log_output.getvalue()
    lane.ack(3)
    assert not list(lane.dir.iterdir())  # delivered: the segment is gone, nothing set aside
    spool.close()


def test_a_segment_replaced_after_start_up_is_set_aside_at_read_back(tmp_path: Path) -> None:
    path = write_segment(tmp_path / "pg", 1, [record_line(1), record_line(2)])
    spool = spool_at(tmp_path)
    lane = lane_of(spool)
    path.unlink()
    os.mkfifo(path)
    assert lane.load_next() == ([], 2)
    assert corrupt_dropped(spool) == 2
    assert path.with_suffix(".corrupt").exists()
    spool.close()


def test_set_aside_files_count_toward_the_budget_and_go_first_oldest_first(tmp_path: Path) -> None:
    lane_dir = tmp_path / "pg"
    lane_dir.mkdir()
    for seq in (1, 2):
        (lane_dir / f"{seq:016d}.corrupt").write_bytes(b"x" * 30_000)
    spool = spool_at(tmp_path, max_bytes=70_000)
    lane = lane_of(spool)
    assert lane.bytes == 60_000
    n = 0
    while (lane_dir / f"{1:016d}.corrupt").exists():
        assert lane.append([reading(n)], loaded=False)
        n += 1
    assert (lane_dir / f"{2:016d}.corrupt").exists()  # only as much room as needed, oldest first
    while lane.append([reading(n)], loaded=False):
        n += 1
    assert not (lane_dir / f"{2:016d}.corrupt").exists()  # then the next one; then the budget is spent
    assert lane.bytes <= 70_000
    spool.close()


SHORT_WRITES = """
import json, resource, sys
from pathlib import Path
from gpuid.delivery.delivery import Delivery
from gpuid.metrics import Metrics
from tests.support.app import sample
from tests.support.memory import MemoryExporter
from tests.support.records import fast_delivery, reading

limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it are short, then EFBIG
metrics = Metrics()
settings = fast_delivery(spool_dir=Path(sys.argv[1]), queue_size=100)
delivery = Delivery([MemoryExporter("pg")], metrics, settings)
for n in range(0, 600, 3):
    delivery.submit([reading(i) for i in range(n, n + 3)])
print(json.dumps({
    "kept": delivery.waiting()["pg"],
    "refused": sample(metrics, "gpuid_export_dropped_total", exporter="pg", reason="spool_error"),
    "write_failed": sample(metrics, "gpuid_spool_errors_total", exporter="pg", error="write_failed"),
}))
"""


def test_short_writes_are_rolled_back_and_counted(tmp_path: Path) -> None:
    """A real file-size limit (RLIMIT_FSIZE, in a child process) makes writes short and then fail."""
    done = subprocess.run(
        [sys.executable, "-c", SHORT_WRITES, str(tmp_path), "20000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    counts = json.loads(done.stdout.splitlines()[-1])  # after its log lines
    assert counts["write_failed"] > 0
    assert counts["kept"] + counts["refused"] == 600
    segments = sorted((tmp_path / "pg").glob("*.jsonl"))
    assert all(p.read_bytes().endswith(b"\n") for p in segments)  # no torn line anywhere
    assert all(p.stat().st_size <= 20000 for p in segments)

    spool = spool_at(tmp_path)
    lane = lane_of(spool)
    recovered = []
    while lane.next_unloaded() is not None:
        records, lost = lane.load_next()
        assert lost == 0
        recovered += records
    assert len(recovered) == counts["kept"]
    assert len({r.gpu_uuid for r in recovered}) == len(recovered)
    spool.close()
