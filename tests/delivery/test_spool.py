"""The on-disk spool on its own: round trip, order, partial acks, budget, lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuid.delivery.spool import Spool, reading_from_dict
from gpuid.errors import ConfigError
from tests.support.records import reading


def test_reading_round_trips_through_json() -> None:
    for n in (1, 2):
        r = reading(n)
        assert reading_from_dict(r.to_dict()) == r


def test_segments_survive_a_restart_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    lane = spool.lane("pg")
    assert lane.append([reading(1), reading(2)], loaded=True)
    assert lane.append([reading(3)], loaded=False)
    spool.close()
    with (lane.dir / "0000000000000001.jsonl").open("ab") as torn:
        torn.write(b'{"cluster": "half a li')  # the process died mid-write

    again = Spool(tmp_path, 1 << 20)
    lane = again.lane("pg")
    assert lane.unloaded_records == 3
    assert again.used == lane.bytes > 0
    got = lane.load_next() + lane.load_next()
    assert [r.gpu_uuid for r in got] == [reading(n).gpu_uuid for n in (1, 2, 3)]
    lane.ack(1)  # half of the first segment: it stays on disk
    assert len(list(lane.dir.glob("*.jsonl"))) == 2
    lane.ack(2)
    assert not list(lane.dir.glob("*.jsonl"))
    assert again.used == 0
    assert lane.append([reading(4)], loaded=True)
    assert [p.name for p in lane.dir.glob("*.jsonl")] == ["0000000000000002.jsonl"]  # numbering goes on
    again.close()


def test_appends_share_a_segment_until_it_rolls(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_records=4)
    lane = spool.lane("pg")
    for n in range(10):
        assert lane.append([reading(n)], loaded=True)
    assert len(list(lane.dir.glob("*.jsonl"))) == 3  # 4 + 4 + 2
    lane.ack(10)
    assert not list(lane.dir.glob("*.jsonl"))
    assert lane.bytes == spool.used == 0
    spool.close()


def test_each_exporter_has_its_own_budget(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 4096)
    try:
        a, b = spool.lane("a"), spool.lane("b")
        written = 0
        while a.append([reading(written)], loaded=False):
            written += 1
        assert written > 0
        assert not a.append([reading(0)], loaded=False)  # a is full...
        assert b.append([reading(0)], loaded=False)  # ...and b still has all of its room
    finally:
        spool.close()


def test_one_process_per_spool_dir(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    with pytest.raises(ConfigError, match="in use"):
        Spool(tmp_path, 1 << 20)
    spool.close()


def test_unusable_dir_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="SPOOL_DIR"):
        Spool(tmp_path / "file" / "spool", 1 << 20)
