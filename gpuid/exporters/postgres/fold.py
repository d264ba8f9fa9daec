"""How one batch changes the GPU inventory: pure, so it is tested without a database.

``fold`` takes the batch and the inventory rows it touches (locked by the
caller) and returns the rows to upsert, the ``first_seen`` corrections, and
the moves. Readings are applied oldest first; one older than the row's
``last_seen`` (a spool replay) changes history and ``first_seen`` only, so
replaying a batch never invents a move or moves a GPU back in time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gpuid.errors import ExportError
from gpuid.records import GPUReading


def observed_at(reading: GPUReading) -> datetime:
    """The reading's timestamp as an aware datetime (what timestamptz wants)."""
    try:
        return datetime.fromisoformat(reading.observed_at)
    except ValueError as e:
        raise ExportError(
            f"postgres: observed_at {reading.observed_at!r} is not RFC 3339", transient=False
        ) from e


def same_place(machine: str | None, node: str, other_machine: str | None, other_node: str) -> bool:
    """Whether two sightings are at the same place: machine if both know it, else node."""
    if machine and other_machine:
        return machine == other_machine
    return node == other_node


def fold(
    batch: Sequence[GPUReading], current: dict[tuple[str, str], dict[str, Any]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[dict[str, Any]]]:
    """From a batch and the inventory rows it touches: upserts, first_seen-only updates, moves."""
    state = {key: dict(row) for key, row in current.items()}
    moves: list[dict[str, Any]] = []
    for r in sorted(batch, key=observed_at):
        key, at = (r.cluster, r.gpu_uuid), observed_at(r)
        row = state.get(key)
        if row is None:
            state[key] = {"node": r.node, "machine": r.machine, "first_seen": at, "last_seen": at, "moves": 0}
            state[key]["reading"] = r
            continue
        row["first_seen"] = min(row["first_seen"], at)
        if at < row["last_seen"]:
            continue  # older than what the inventory knows (a spool replay): history only
        if not same_place(row["machine"], row["node"], r.machine, r.node):
            moves.append(
                {"cluster": r.cluster, "gpu_uuid": r.gpu_uuid, "gpu_serial": r.gpu_serial}
                | {"from_node": row["node"], "from_machine": row["machine"], "to_node": r.node}
                | {"to_machine": r.machine, "previous_seen": row["last_seen"], "moved_at": at}
            )
            row["moves"] += 1
        row.update(node=r.node, machine=r.machine, last_seen=at, reading=r)
    upserts: list[tuple[Any, ...]] = []
    earlier: list[tuple[Any, ...]] = []
    for key, row in state.items():
        if (seen_now := row.get("reading")) is not None:
            r = seen_now
            where = (r.node, r.machine, r.module_id, r.gpu_index, r.pci_bus_id, r.driver_version, r.source)
            seen = (row["first_seen"], row["last_seen"], row["moves"])
            upserts.append(
                (
                    r.cluster,
                    r.gpu_uuid,
                    r.gpu_serial,
                    r.chassis_serial,
                    r.product_name,
                    r.board_part_number,
                    *where,
                    *seen,
                )
            )
        elif row["first_seen"] < current[key]["first_seen"]:
            earlier.append((*key, row["first_seen"]))
    return upserts, earlier, moves
