"""What this process knows of the inventory, so a batch that changes nothing writes only history.

A bounded map ``gpu_uuid -> (facets + cluster, first_seen)`` filled from rows
read or written under the writers' exclusive lock, stamped with the inventory
*epoch* (a sequence every inventory change bumps) it was exact at. A writer
holding the shared lock checks the epoch: if it is still the one the cache was
exact at, nobody changed the inventory since; otherwise the cache is dropped.
Any error drops it too. Correctness never rests on it: a miss, a doubt or a
change sends the batch down the path that reads the rows. ``likely_unchanged``
looks at three rows, so a first sweep or a fleet-wide move is told at once;
``unchanged`` checks every row while the server stores them (``pg_write``).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from gpuid.exporters.postgres.fold import (
    FACET_COUNT,
    FACETS,
    ROW_AT,
    ROW_CLUSTER,
    ROW_INDEX,
    ROW_UUID,
    Key,
    Placed,
)

# About 0.4 KB per GPU (40 MB): a fleet of up to this many GPUs is re-sighted without reading rows.
DEFAULT_CAPACITY = 100_000
# Facets many GPUs share (node, machine, model, part number, slot, driver): one string object each.
_SHARED = frozenset(
    FACETS.index(f)
    for f in (
        "node",
        "machine",
        "chassis_serial",
        "product_name",
        "board_part_number",
        "pci_bus_id",
        "driver_version",
    )
)
# A COPY row starts with the facets and the cluster: one slice compares place, identity and cluster.
_KNOWN = FACET_COUNT + 1
assert ROW_CLUSTER == FACET_COUNT


class InventoryCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.epoch: int | None = None  # None: nothing known
        # Evicted oldest-learned first: a sweep visits every GPU in turn, which least-recently-used
        # order would not serve any better, and a hit then costs no reordering.
        self._rows: OrderedDict[str, tuple[tuple[Any, ...], datetime]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()
        self.epoch = None

    def knows(self, keys: Iterable[Key]) -> bool:
        """Whether any of these GPUs is cached."""
        rows = self._rows
        return self.epoch is not None and any(
            (e := rows.get(u)) is not None and e[0][-1] == c for c, u in keys
        )

    def unchanged(self, rows: Sequence[tuple[Any, ...]]) -> bool:
        """Whether, by what is cached, these COPY rows change no inventory row (only add history)."""
        odd = self._scan(rows)
        return odd is not None and self._keeps(rows, odd)

    def likely_unchanged(self, rows: Sequence[tuple[Any, ...]]) -> bool:
        """``unchanged`` on a sample: cheap, so a first sweep or a fleet-wide move is told at once."""
        return bool(rows) and self._scan([rows[0], rows[len(rows) // 2], rows[-1]]) is not None

    def _scan(self, rows: Sequence[tuple[Any, ...]]) -> dict[str, tuple[Any, ...]] | None:
        """None if a row is unknown, older than its first sighting or elsewhere; else the GPUs seen
        where they were but with another identity."""
        if self.epoch is None:
            return None
        get = self._rows.get
        odd: dict[str, tuple[Any, ...]] = {}
        for row in rows:
            if (entry := get(row[ROW_UUID])) is None or row[ROW_AT] < entry[1]:
                return None
            if row[:_KNOWN] != (known := entry[0]):
                if row[:2] != known[:2] or row[ROW_CLUSTER] != known[-1]:
                    return None  # another place (a move, or an old reading the history must judge)
                odd[row[ROW_UUID]] = known
        return odd

    @staticmethod
    def _keeps(rows: Sequence[tuple[Any, ...]], odd: dict[str, tuple[Any, ...]]) -> bool:
        # Same place, other identity (two GPUs claiming one UUID, a driver upgrade): the row keeps
        # the identity of the newest reading, lowest gpu_index first, as the fold would.
        newest: dict[str, tuple[datetime, int, tuple[Any, ...]]] = {}
        for row in rows if odd else ():
            uuid, at, index = row[ROW_UUID], row[ROW_AT], row[ROW_INDEX]
            if uuid in odd and ((n := newest.get(uuid)) is None or (at, -index) > (n[0], -n[1])):
                newest[uuid] = (at, index, row[:_KNOWN])
        return all(newest[uuid][2] == known for uuid, known in odd.items())

    def learn(self, epoch: int, rows: Mapping[Key, Placed]) -> None:
        """Record ``rows`` as exact at ``epoch``; entries from another epoch are dropped."""
        if epoch != self.epoch:
            self._rows.clear()
            self.epoch = epoch
        for (cluster, uuid), row in rows.items():
            known = tuple(
                sys.intern(v) if i in _SHARED and type(v) is str else v for i, v in enumerate(row.facets)
            )
            self._rows[uuid] = ((*known, sys.intern(cluster)), row.first_seen)
            self._rows.move_to_end(uuid)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def advance(self, old: int, new: int, rows: Mapping[Key, Placed]) -> None:
        """After a commit that moved the epoch from ``old`` to ``new`` by changing ``rows``."""
        if self.epoch != old:
            self.clear()
        self.epoch = new
        self.learn(new, rows)
