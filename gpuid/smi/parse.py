"""Pure parsers that turn ``nvidia-smi`` output into GPU facts.

Exec hands us raw bytes from ``nvidia-smi -q -x`` (and ``-L`` text when MIG is
on); this module turns them into ``SmiReport``/``GpuFacts`` without any I/O, so
every driver quirk is tested against captured output.

The XML comes from a process we do not control, so expat validates it first:
a DOCTYPE is allowed only as the plain external reference real drivers print
(the DTD is never loaded); an internal subset, an entity declaration or a
reference to an undeclared entity is a ``ParseError``. Only the elements we
need are kept, each at its exact path (a ``uuid`` anywhere but directly
under ``<gpu>`` is not the GPU UUID); every other subtree is skipped
(``gpuid.smi.xml`` does the byte-level work).

Duplicate GPU UUIDs in one report (sanitised captures, broken firmware) are
kept as separate ``GpuFacts``, which still differ by index and PCI slot, rather
than failing the whole node or silently dropping a board; ``duplicate_uuids``
names them so the caller can log and count the anomaly.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import TypeVar

from gpuid.errors import ParseError
from gpuid.records import GpuFacts, MigDevice, SmiReport
from gpuid.smi.xml import collect

_NULLS = frozenset({"", "N/A", "[N/A]"})
# Before DTD v12 some drivers printed the board part (900-2G500-0040-000) as
# gpu_part_number; newer ones put the chip part (2330-885-A1) there instead.
_BOARD_PART = re.compile(r"[0-9A-Z]{3}-[0-9A-Z]{5}-[0-9A-Z]{4}-[0-9A-Z]{3}")
_GPU_LINE = re.compile(r"GPU\s+\d+:.*\(UUID:\s*(GPU-[^\s)]+)\)")
_MIG_LINE = re.compile(r"MIG\s+(\S+)\s+Device\s+\d+:\s*\(UUID:\s*(MIG-[^\s)]+)\)")
_OLD_MIG_UUID = re.compile(r"MIG-GPU-[^/]+/(\d+)/(\d+)")
_UNKNOWN_MIG = MigDevice(uuid=None, profile=None, gpu_instance_id=None, compute_instance_id=None)
T = TypeVar("T")


def parse_smi_xml(data: bytes) -> SmiReport:
    """Parse ``nvidia-smi -q -x`` output; ``ParseError`` if it is not a usable report."""
    if not data or data.isspace():
        raise ParseError("nvidia-smi printed nothing")
    root, gpus = collect(data)
    if not gpus:
        raise ParseError("nvidia-smi XML lists no <gpu> elements")
    return SmiReport(
        driver_version=_text(root.get("driver_version")) or _text(root.get("kmd_version")),
        cuda_version=_text(root.get("cuda_version")),
        gpus=tuple(_gpu_facts(i, fields, migs) for i, (fields, migs) in enumerate(gpus)),
    )


def _gpu_facts(index: int, f: dict[str, str], migs: list[dict[str, str]]) -> GpuFacts:
    uuid = _text(f.get("uuid"))
    if uuid is None:
        raise ParseError(f"GPU {index} (PCI {f['id'][:40] or '?'}) has no usable UUID")
    board = _text(f.get("board_part_number"))
    legacy_part = _text(f.get("gpu_part_number"))
    if board is None and legacy_part is not None and _BOARD_PART.fullmatch(legacy_part):
        board = legacy_part
    return GpuFacts(
        gpu_uuid=uuid,
        gpu_serial=_serial(f.get("serial")),
        chassis_serial=_serial(f.get("chassis_serial")),
        module_id=_pick(_int(f.get("module_id")), _int(f.get("gpu_module_id"))),
        gpu_index=index,
        pci_bus_id=_text(f.get("pci_bus_id")) or _text(f["id"]),
        product_name=_text(f.get("product_name")),
        product_architecture=_text(f.get("product_architecture")),
        board_part_number=board,
        vbios_version=_text(f.get("vbios_version")),
        mig_mode=_text(f.get("mig_mode")),
        mig_devices=tuple(
            MigDevice(
                uuid=_text(m.get("uuid")),
                profile=_text(m.get("profile")),
                gpu_instance_id=_int(m.get("gpu_instance_id")),
                compute_instance_id=_int(m.get("compute_instance_id")),
            )
            for m in migs
        ),
    )


def duplicate_uuids(report: SmiReport) -> list[str]:
    """UUIDs that more than one GPU of ``report`` claims, in order of first appearance."""
    counts = Counter(g.gpu_uuid for g in report.gpus)
    return [uuid for uuid, n in counts.items() if n > 1]


def parse_smi_list(text: str) -> dict[str, tuple[MigDevice, ...]]:
    """Map each GPU UUID in ``nvidia-smi -L`` output to its MIG devices, in listed order."""
    found: dict[str, list[MigDevice]] = {}
    current: list[MigDevice] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if gpu := _GPU_LINE.match(line):
            current = found.setdefault(gpu[1], [])
        elif mig := _MIG_LINE.match(line):
            if current is None:
                raise ParseError(f"nvidia-smi -L lists a MIG device before any GPU: {line[:80]!r}")
            old = _OLD_MIG_UUID.fullmatch(mig[2])
            gi, ci = (int(old[1]), int(old[2])) if old else (None, None)
            current.append(MigDevice(uuid=mig[2], profile=mig[1], gpu_instance_id=gi, compute_instance_id=ci))
    return {uuid: tuple(devices) for uuid, devices in found.items()}


def merge_mig(report: SmiReport, listing: dict[str, tuple[MigDevice, ...]]) -> SmiReport:
    """Fill MIG UUIDs/profiles from ``-L`` into the XML's devices, matched by position.

    ``-L`` decides which devices exist; the XML supplies whatever ``-L`` lacks
    (gpu/compute instance ids) for the positions both have.
    """
    return dataclasses.replace(
        report, gpus=tuple(_merge_gpu(g, listing.get(g.gpu_uuid, ())) for g in report.gpus)
    )


def _merge_gpu(gpu: GpuFacts, listed: tuple[MigDevice, ...]) -> GpuFacts:
    if not listed:
        return gpu
    from_xml = (*gpu.mig_devices, *[_UNKNOWN_MIG] * len(listed))  # padded: zip stops at -L's length
    merged = tuple(
        MigDevice(
            uuid=_pick(dev.uuid, xml.uuid),
            profile=_pick(dev.profile, xml.profile),
            gpu_instance_id=_pick(dev.gpu_instance_id, xml.gpu_instance_id),
            compute_instance_id=_pick(dev.compute_instance_id, xml.compute_instance_id),
        )
        for dev, xml in zip(listed, from_xml, strict=False)
    )
    return dataclasses.replace(gpu, mig_devices=merged)


def _pick(first: T | None, second: T | None) -> T | None:
    return first if first is not None else second


def _text(raw: str | None) -> str | None:
    value = raw.strip() if raw is not None else ""
    return None if value in _NULLS else value


def _serial(raw: str | None) -> str | None:
    """Serial-like values: also null when redacted or all zeros (placeholders, not identities)."""
    value = _text(raw)
    return None if value is None or value.upper() == "REDACTED" or not value.strip("0") else value


def _int(raw: str | None) -> int | None:
    value = _text(raw)
    return int(value) if value is not None and value.isascii() and value.isdigit() else None
