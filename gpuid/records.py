"""The records: the one contract between scanning and every exporter.

``GpuFacts`` is what ``nvidia-smi`` says about one GPU; ``GPUReading`` adds
where and when it was seen. ``GpuChange`` says that a node's set of GPUs
changed (``gpuid.fleet``). Field names and order are the documented schema
(docs/records.md, docs/fleet.md); exporters serialise with
``to_dict``/``to_json``, and ``record_json``/``record_dict`` tag a change with
its ``event`` so a reader of a mixed stream can tell the two apart.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class MigDevice:
    """One MIG device carved out of a GPU."""

    uuid: str | None
    profile: str | None
    gpu_instance_id: int | None
    compute_instance_id: int | None

    def to_dict(self) -> dict[str, Any]:
        """Its fields by name (``dataclasses.asdict`` deep-copies each value: 10x slower)."""
        return {
            "uuid": self.uuid,
            "profile": self.profile,
            "gpu_instance_id": self.gpu_instance_id,
            "compute_instance_id": self.compute_instance_id,
        }


@dataclass(frozen=True, slots=True)
class GpuFacts:
    """Identity of one GPU as reported by ``nvidia-smi -q -x`` (and ``-L`` for MIG)."""

    gpu_uuid: str
    gpu_serial: str | None
    chassis_serial: str | None
    module_id: int | None
    gpu_index: int
    pci_bus_id: str | None
    product_name: str | None
    product_architecture: str | None
    board_part_number: str | None
    vbios_version: str | None
    mig_mode: str | None
    mig_devices: tuple[MigDevice, ...] = ()


@dataclass(frozen=True, slots=True)
class SkippedGpu:
    """A ``<gpu>`` left out of a report because it has no usable UUID.

    ``reason`` is one of ``uuid_missing``, ``uuid_placeholder``, ``uuid_too_long``, ``uuid_invalid``.
    """

    index: int
    pci_bus_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class NulledField:
    """A value nvidia-smi printed that the record holds as null instead.

    ``gpu_index`` is None for node-wide fields (``driver_version``, ``cuda_version``); ``field`` is the
    record field (``mig_devices[2].uuid`` for a MIG device's); ``reason`` is ``placeholder`` (an NVML
    "no value" or error string), ``too_long`` or ``invalid`` (damaged bytes, control characters, wrong
    shape, out of range).
    """

    gpu_index: int | None
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class SmiReport:
    """Everything one ``nvidia-smi -q -x`` run told us about a node.

    ``warnings`` is the text nvidia-smi printed around the XML (each piece cut to 200 characters);
    ``skipped`` and ``nulled`` say which GPUs and values were left out and why. ``fast_path`` tells
    whether the byte-level identity reader produced the report (False: the full XML parser did); it
    says how the report was read, not what it says, so it takes no part in ``==``.
    """

    driver_version: str | None
    cuda_version: str | None
    gpus: tuple[GpuFacts, ...]
    warnings: tuple[str, ...] = ()
    skipped: tuple[SkippedGpu, ...] = ()
    nulled: tuple[NulledField, ...] = ()
    fast_path: bool = dataclasses.field(default=False, compare=False)

    @property
    def mig_enabled(self) -> bool:
        return any(g.mig_mode == "Enabled" for g in self.gpus)


@dataclass(frozen=True, slots=True)
class SmiListing:
    """What ``nvidia-smi -L`` said: each GPU UUID's MIG devices in listed order, and the lines it skipped."""

    devices: dict[str, tuple[MigDevice, ...]]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GPUReading:
    """One GPU seen in one pod at one moment: the exported record."""

    EVENT: ClassVar[str] = "gpu_reading"

    cluster: str
    node: str
    machine: str | None
    source: str
    pod_uid: str
    gpu_uuid: str
    gpu_serial: str | None
    chassis_serial: str | None
    module_id: int | None
    gpu_index: int
    pci_bus_id: str | None
    product_name: str | None
    product_architecture: str | None
    board_part_number: str | None
    vbios_version: str | None
    driver_version: str | None
    cuda_version: str | None
    mig_mode: str | None
    mig_devices: tuple[MigDevice, ...]
    observed_at: str

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in FIELDS}
        out["mig_devices"] = [m.to_dict() for m in self.mig_devices]
        return out

    def to_json(self, **extra: Any) -> str:
        return json.dumps({**extra, **self.to_dict()}, separators=(",", ":"))


FIELDS = dataclasses.fields(GPUReading)
FIELD_NAMES = tuple(f.name for f in FIELDS)
CHANGES = ("added", "removed", "replaced", "moved")


@dataclass(frozen=True, slots=True)
class GpuChange:
    """A node's set of GPUs changed since it was last recorded: one GPU added, removed, replaced or moved."""

    EVENT: ClassVar[str] = "gpu_changed"

    cluster: str
    node: str
    machine: str | None
    change: str  # one of CHANGES
    gpu_uuid: str  # the GPU now in the node; the one that left for "removed"
    old_uuid: str | None  # the GPU it took the place of ("replaced", a "moved" into a used slot)
    old_serial: str | None
    new_serial: str | None
    pci_bus_id: str | None  # the slot, when known
    from_node: str | None  # "moved": the node it was last recorded on
    observed_at: str

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in CHANGE_FIELDS}

    def to_json(self, **extra: Any) -> str:
        return json.dumps({**extra, **self.to_dict()}, separators=(",", ":"))


CHANGE_FIELDS = dataclasses.fields(GpuChange)
CHANGE_FIELD_NAMES = tuple(f.name for f in CHANGE_FIELDS)
Record = GPUReading | GpuChange  # what delivery carries to every exporter


def record_dict(record: Record) -> dict[str, Any]:
    """A reading's fields as always; a change's with ``"event": "gpu_changed"`` first."""
    if isinstance(record, GpuChange):
        return {"event": GpuChange.EVENT, **record.to_dict()}
    return record.to_dict()


def record_json(record: Record) -> str:
    """``record_dict`` as one compact JSON line (no newline)."""
    if isinstance(record, GpuChange):
        return record.to_json(event=GpuChange.EVENT)
    return record.to_json()


def utc_now(timespec: str = "milliseconds") -> str:
    """RFC 3339 UTC timestamp, ``...Z``, to the millisecond unless ``timespec`` says otherwise."""
    return datetime.now(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def readings_from_report(
    report: SmiReport,
    *,
    cluster: str,
    node: str,
    machine: str | None,
    source: str,
    pod_uid: str,
    observed_at: str | None = None,
) -> list[GPUReading]:
    """One ``GPUReading`` per GPU in ``report``, stamped with where it was seen."""
    at = observed_at or utc_now()
    return [
        GPUReading(
            cluster=cluster,
            node=node,
            machine=machine,
            source=source,
            pod_uid=pod_uid,
            gpu_uuid=g.gpu_uuid,
            gpu_serial=g.gpu_serial,
            chassis_serial=g.chassis_serial,
            module_id=g.module_id,
            gpu_index=g.gpu_index,
            pci_bus_id=g.pci_bus_id,
            product_name=g.product_name,
            product_architecture=g.product_architecture,
            board_part_number=g.board_part_number,
            vbios_version=g.vbios_version,
            driver_version=report.driver_version,
            cuda_version=report.cuda_version,
            mig_mode=g.mig_mode,
            mig_devices=g.mig_devices,
            observed_at=at,
        )
        for g in report.gpus
    ]
