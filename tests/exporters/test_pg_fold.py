"""The inventory fold and the writer's cache, without a database."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from gpuid.exporters.postgres.cache import InventoryCache
from gpuid.exporters.postgres.check import prepare
from gpuid.exporters.postgres.fold import Placed, facets_of, fold
from gpuid.records import GPUReading
from tests.support.records import reading

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def key(r: GPUReading) -> tuple[str, str]:
    return (r.cluster, r.gpu_uuid)


def placed(r: GPUReading, minutes: int, moves: int = 0) -> Placed:
    when = T0 + timedelta(minutes=minutes)
    return Placed(facets_of(r), r.source, when, when, moves)


def run_fold(
    batch: list[GPUReading], current: dict[Any, Placed], newest: dict[Any, Any] | None = None
) -> Any:
    return fold(prepare(batch), current, newest or {})


def test_new_gpu_seen_in_two_places_in_one_batch_moves_once() -> None:
    a = reading(1, node="n-a", machine="i-a", observed_at=at(0))
    b = reading(1, node="n-b", machine="i-b", pod_uid="p2", observed_at=at(5))
    out = run_fold([b, a], {})  # arrival order does not matter inside a batch
    (move,) = out.moves
    assert move[3:] == ("n-a", "i-a", "n-b", "i-b", T0, T0 + timedelta(minutes=5))
    (row,) = out.inserts
    assert row[6:8] == ("n-b", "i-b")
    assert row[-3:] == (T0, T0 + timedelta(minutes=5), 1)  # first_seen, changed_at, moves


def test_reading_not_newer_than_history_changes_only_first_seen() -> None:
    now = reading(1, node="n-b", machine="i-b", observed_at=at(10))
    old = reading(1, node="n-a", machine="i-a", pod_uid="p0", observed_at=at(-5))
    out = run_fold([old], {key(now): placed(now, 10)}, {key(now): T0 + timedelta(minutes=10)})
    assert not out.moves
    (row,) = out.updates
    assert row[6:8] == ("n-b", "i-b")
    assert row[13] == T0 - timedelta(minutes=5)


def test_history_newer_than_the_row_guards_against_going_back() -> None:
    # The row was set at minute 0; the history already has minute 20 (same place, no write).
    row = reading(1, node="n-a", machine="i-a", observed_at=at(0))
    late = reading(1, node="n-b", machine="i-b", pod_uid="p9", observed_at=at(10))
    out = run_fold([late], {key(row): placed(row, 0)}, {key(row): T0 + timedelta(minutes=20)})
    assert (out.moves, out.updates, out.inserts) == ([], [], [])


def test_same_facets_write_nothing_and_node_rename_is_no_move() -> None:
    row = reading(1, node="n-a", machine="i-a", observed_at=at(0))
    again = reading(1, node="n-a", machine="i-a", pod_uid="p2", observed_at=at(5))
    assert (run_fold([again], {key(row): placed(row, 0)}).updates) == []
    renamed = reading(1, node="n-a2", machine="i-a", pod_uid="p3", observed_at=at(6))
    out = run_fold([renamed], {key(row): placed(row, 0)})
    assert not out.moves
    assert [u[6] for u in out.updates] == ["n-a2"]


def test_two_gpus_claiming_one_uuid_keep_the_lowest_index() -> None:
    first = reading(3, observed_at=at(0))
    twin = dataclasses.replace(first, gpu_index=5, pci_bus_id="00000000:99:00.0", gpu_serial="other")
    out = run_fold([twin, first], {})
    (row,) = out.inserts
    assert (row[9], row[10]) == (3, first.pci_bus_id)
    assert not out.moves


def test_cache_says_unchanged_only_for_known_gpus_at_their_place() -> None:
    cache = InventoryCache()
    known = reading(1, observed_at=at(0))
    seen = reading(1, pod_uid="p2", observed_at=at(5))
    assert not cache.unchanged(prepare([seen]))  # nothing known yet
    cache.learn(7, {key(known): placed(known, 0)})
    assert cache.unchanged(prepare([seen]))
    assert not cache.unchanged(prepare([reading(2, observed_at=at(5))]))  # unknown GPU
    assert not cache.unchanged(prepare([dataclasses.replace(seen, machine="i-other")]))  # moved
    assert not cache.unchanged(prepare([dataclasses.replace(seen, observed_at=at(-1))]))  # older
    assert not cache.unchanged(prepare([dataclasses.replace(seen, driver_version="999")]))  # upgrade
    assert not cache.unchanged(prepare([dataclasses.replace(seen, cluster="elsewhere")]))


def test_cache_accepts_a_twin_uuid_when_the_fold_would_keep_the_row() -> None:
    cache = InventoryCache()
    first = reading(3, observed_at=at(0))
    cache.learn(1, {key(first): placed(first, 0)})
    again = dataclasses.replace(first, observed_at=at(5), pod_uid="p2")
    twin = dataclasses.replace(again, gpu_index=5, gpu_serial="other")
    assert cache.unchanged(prepare([twin, again]))
    # Alone, the twin would become the row: that is a change.
    assert not cache.unchanged(prepare([twin]))


def test_cache_epochs_and_bound() -> None:
    cache = InventoryCache(capacity=2)
    gpus = [reading(n, observed_at=at(0)) for n in range(3)]
    cache.learn(1, {key(g): placed(g, 0) for g in gpus[:2]})
    cache.learn(1, {key(gpus[2]): placed(gpus[2], 0)})
    assert len(cache) == 2
    assert not cache.unchanged(prepare(gpus[:1]))  # the oldest learned was dropped
    cache.learn(2, {key(gpus[0]): placed(gpus[0], 0)})
    assert (len(cache), cache.epoch) == (1, 2)  # entries of another epoch are not trusted
    cache.advance(5, 6, {})  # someone else changed the inventory since epoch 2
    assert (len(cache), cache.epoch) == (0, 6)
    cache.clear()
    assert cache.epoch is None
