"""A node's GPUs as last recorded, the annotation that keeps them, and what changed since.

The state of a node is its GPUs (UUID, board serial, PCI slot) plus a
sequence number that grows with every change, so the same swap done twice is
two transitions, never one. It is kept in memory, and with
``GPU_CHANGE_EVENTS`` also on the Node as the annotation ``gpuid.io/gpus``::

    7;GPU-ab6ab95d-…=1652923034028@00000000:18:00.0,GPU-…=…@…

(``seq;uuid=serial@pci_bus_id,…`` sorted by UUID, serial and slot
percent-encoded, empty when unknown; about 70 bytes per GPU, capped at
``MAX_ANNOTATION_BYTES``). ``diff`` turns two states into changes: an
arrival whose UUID or serial was last recorded on another node has *moved*;
an arrival and a departure in the same PCI slot (or, failing that, left over
on both sides) are a *replacement*; the rest were *added* or *removed*. A
serial that goes from unknown to known is no change. This module is pure.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from urllib.parse import quote, unquote

from gpuid.records import GPUReading

ANNOTATION = "gpuid.io/gpus"
MAX_ANNOTATION_BYTES = 16 * 1024  # about 200 GPUs; a node with more is tracked in memory only
_RESERVED = ";,=@%"


@dataclass(frozen=True, slots=True)
class Slot:
    """One GPU in a node."""

    uuid: str
    serial: str | None
    pci_bus_id: str | None


@dataclass(frozen=True, slots=True)
class NodeGpus:
    seq: int  # grows by one with every recorded change of the node
    gpus: tuple[Slot, ...]  # sorted by UUID


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # added, removed, replaced, moved (records.CHANGES)
    new: Slot | None  # the GPU now in the node (None for "removed")
    old: Slot | None  # the GPU that left (None for "added", and "moved" into a free slot)
    from_node: str | None = None  # "moved": where it was last recorded

    @property
    def gpu(self) -> Slot:
        slot = self.new or self.old
        assert slot is not None
        return slot


def slots_of(readings: Iterable[GPUReading]) -> tuple[Slot, ...]:
    """The GPUs of one scan, one per UUID, sorted."""
    found = {r.gpu_uuid: Slot(r.gpu_uuid, r.gpu_serial, shared(r.pci_bus_id)) for r in readings}
    return tuple(found[u] for u in sorted(found))


def shared(value: str | None) -> str | None:
    """One copy of a value many GPUs of the fleet repeat (slot, model, chassis): kept per scanned
    node, a copy per GPU would add up to megabytes over a large fleet."""
    return None if value is None else sys.intern(value)


def _enc(value: str | None) -> str:
    return quote(value or "", safe="-._:/")


def encode(state: NodeGpus) -> str:
    return f"{state.seq};" + ",".join(
        f"{_enc(g.uuid)}={_enc(g.serial)}@{_enc(g.pci_bus_id)}" for g in state.gpus
    )


def decode(text: str) -> NodeGpus | None:
    """The state in an annotation value; None when it is not one (hand-edited, another version)."""
    head, sep, body = text.partition(";")
    if not sep or not head.isdigit():
        return None
    gpus = []
    for entry in filter(None, body.split(",")):
        uuid, eq, rest = entry.partition("=")
        serial, at, pci = rest.partition("@")
        if not (eq and at and uuid):
            return None
        gpus.append(Slot(unquote(uuid), unquote(serial) or None, unquote(pci) or None))
    return NodeGpus(int(head), tuple(sorted(gpus, key=lambda g: g.uuid)))


def fits(state: NodeGpus) -> bool:
    """Whether the state is small enough to keep on the Node."""
    return len(encode(state)) <= MAX_ANNOTATION_BYTES


def _serial_changed(old: Slot, new: Slot) -> bool:
    return old.serial is not None and new.serial is not None and old.serial != new.serial


def _pair(departed: list[Slot], arrived: list[Slot]) -> list[tuple[Slot | None, Slot | None]]:
    """Departures and arrivals in the same PCI slot, then the rest side by side, then the unpaired."""
    pairs: list[tuple[Slot | None, Slot | None]] = []
    by_slot = {g.pci_bus_id: g for g in arrived if g.pci_bus_id}
    left_old = []
    for old in departed:
        new = by_slot.pop(old.pci_bus_id, None) if old.pci_bus_id else None
        if new is None:
            left_old.append(old)
        else:
            pairs.append((old, new))
    left_new = [g for g in arrived if not any(g is new for _, new in pairs)]
    order = lambda g: (g.pci_bus_id or "", g.uuid)  # noqa: E731 - one sort key, used twice
    pairs.extend(zip_longest(sorted(left_old, key=order), sorted(left_new, key=order)))
    return pairs


def diff(prev: NodeGpus, now: Sequence[Slot], located: Callable[[Slot], str | None]) -> list[Change]:
    """What changed from ``prev`` to ``now``; ``located`` names the other node an arrival was last on."""
    before = {g.uuid: g for g in prev.gpus}
    after = {g.uuid: g for g in now}
    changes = [
        Change("replaced", after[u], before[u])
        for u in sorted(before.keys() & after.keys())
        if _serial_changed(before[u], after[u])
    ]
    departed = [before[u] for u in sorted(before.keys() - after.keys())]
    arrived = [after[u] for u in sorted(after.keys() - before.keys())]
    for old, new in _pair(departed, arrived):
        if new is None:
            changes.append(Change("removed", None, old))
        elif (elsewhere := located(new)) is not None:
            changes.append(Change("moved", new, old, elsewhere))
        else:
            changes.append(Change("replaced" if old else "added", new, old))
    return changes


def same_gpus(prev: NodeGpus, now: Sequence[Slot]) -> bool:
    return prev.gpus == tuple(now)


def event_name(node: str, prev: NodeGpus, change: Change) -> str:
    """The Event's name: the same transition always gets the same name, another one never does."""
    key = "\n".join(
        [node, encode(prev), change.kind, *(s.uuid if s else "" for s in (change.old, change.new))]
    )
    return f"{node[:200].rstrip('-.')}.gpuid-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
