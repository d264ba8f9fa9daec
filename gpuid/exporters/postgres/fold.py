"""How one batch changes the GPU inventory: pure, so it is tested without a database.

The inventory holds, per ``(cluster, gpu_uuid)``, the place (node, machine)
and identity (serials, model, slot, driver) of the GPU's newest reading.
``fold`` takes the batch (as COPY rows), the inventory rows it touches (read
under the writers' exclusive lock) and the newest reading the history already
holds for each, and returns the rows to insert, the rows to update and the
moves.
Readings are applied oldest first (ties: lowest ``gpu_index``); one that is not
newer than everything known (a spool replay, a late replica) changes history
and ``first_seen`` only, so replaying a batch never invents a move or moves a
GPU back in time. A row whose place, identity, ``first_seen`` and move count
come out unchanged is not written at all.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpuid.records import GPUReading

Key = tuple[str, str]  # (cluster, gpu_uuid)
# What a reading can change in its GPU's inventory row; place first.
FACETS = (
    "node",
    "machine",
    "gpu_serial",
    "chassis_serial",
    "product_name",
    "board_part_number",
    "module_id",
    "gpu_index",
    "pci_bus_id",
    "driver_version",
)
facets_of = operator.attrgetter(*FACETS)
# The columns of a COPY row of the readings table: the facets, then the cluster, so one slice of a
# row compares what the inventory holds of it; ``observed_at`` (parsed) last.
ROW_COLUMNS = (
    *FACETS,
    "cluster",
    "gpu_uuid",
    "source",
    "pod_uid",
    "product_architecture",
    "vbios_version",
    "cuda_version",
    "mig_mode",
    "mig_devices",
    "observed_at",
)
FACET_COUNT = len(FACETS)
ROW_CLUSTER, ROW_UUID, ROW_SOURCE, ROW_INDEX, ROW_AT = (
    ROW_COLUMNS.index(n) for n in ("cluster", "gpu_uuid", "source", "gpu_index", "observed_at")
)
_ORDER = operator.itemgetter(ROW_AT, ROW_INDEX)  # oldest first; one scan's twins: lowest gpu_index


def observed_at(reading: GPUReading) -> datetime:
    """The reading's timestamp as an aware datetime (what timestamptz wants); naive means UTC."""
    at = datetime.fromisoformat(reading.observed_at)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def same_place(machine: str | None, node: str, other_machine: str | None, other_node: str) -> bool:
    """Whether two sightings are at the same place: machine if both know it, else node."""
    if machine and other_machine:
        return machine == other_machine
    return node == other_node


@dataclass(slots=True)
class Placed:
    """One inventory row as the fold sees it."""

    facets: tuple[Any, ...]
    source: str | None
    first_seen: datetime
    changed_at: datetime  # newest reading written into the row
    moves: int = 0

    def copy(self) -> Placed:
        return Placed(self.facets, self.source, self.first_seen, self.changed_at, self.moves)

    def state(self, key: Key) -> tuple[Any, ...]:
        """The row in ``pg_schema.STATE_COLUMNS`` order."""
        f = self.facets
        identity = (f[2], f[3], f[4], f[5])  # serials, product, part number
        where = (f[0], f[1], f[6], f[7], f[8], f[9], self.source)
        return (*key, *identity, *where, self.first_seen, self.changed_at, self.moves)


# Columns of a move, in the moves table: what ``fold`` returns for each.
MOVE_COLUMNS = (
    "cluster",
    "gpu_uuid",
    "gpu_serial",
    "from_node",
    "from_machine",
    "to_node",
    "to_machine",
    "previous_seen",
    "moved_at",
)


@dataclass
class Fold:
    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    moves: list[tuple[Any, ...]] = field(default_factory=list)
    final: dict[Key, Placed] = field(default_factory=dict)  # every GPU of the batch, for the cache

    @property
    def changed(self) -> bool:
        """Whether any inventory row is written (moves always come with an update)."""
        return bool(self.inserts or self.updates)


def fold(
    rows: Sequence[tuple[Any, ...]], current: dict[Key, Placed], newest: dict[Key, datetime | None]
) -> Fold:
    """Apply the batch (its COPY rows, ``ROW_COLUMNS``) to the inventory rows in ``current``.

    ``newest`` is the newest ``observed_at`` the history held for each GPU of
    ``current`` before this batch (``None`` or absent: only the row's own).
    """
    state: dict[Key, Placed] = {}
    last: dict[Key, datetime] = {}
    out = Fold()
    for row in sorted(rows, key=_ORDER):
        key, at = (row[ROW_CLUSTER], row[ROW_UUID]), row[ROW_AT]
        if (placed := state.get(key)) is None:
            if (was := current.get(key)) is None:
                state[key], last[key] = Placed(row[:FACET_COUNT], row[ROW_SOURCE], at, at), at
                continue
            placed = state[key] = was.copy()
            seen = newest.get(key)
            last[key] = seen if seen is not None and seen > was.changed_at else was.changed_at
        placed.first_seen = min(placed.first_seen, at)
        if at <= last[key]:
            continue  # not newer than what is known: history (and first_seen) only
        previous, last[key] = last[key], at
        if (facets := row[:FACET_COUNT]) == placed.facets:
            continue
        node, machine = placed.facets[0], placed.facets[1]
        if not same_place(machine, node, facets[1], facets[0]):
            out.moves.append((*key, facets[2], node, machine, facets[0], facets[1], previous, at))
            placed.moves += 1
        placed.facets, placed.source, placed.changed_at = facets, row[ROW_SOURCE], at
    for key, placed in state.items():
        out.final[key] = placed
        if (before := current.get(key)) is None:
            out.inserts.append(placed.state(key))
        elif (placed.facets, placed.first_seen, placed.moves) != (
            before.facets,
            before.first_seen,
            before.moves,
        ):
            out.updates.append(placed.state(key))
    return out
