"""Pure parsers that turn ``nvidia-smi`` output into GPU facts: the API the scanner uses.

Exec hands us raw bytes from ``nvidia-smi -q -x`` (and ``-L`` text when MIG is
on); these functions turn them into ``SmiReport``/``SmiListing`` without any I/O,
so every driver quirk is tested against captured output.

``parse_smi_xml`` finds the document (``gpuid.smi.document``: warnings around it,
encodings, DTD refusal, caps), reads it with the fast path (``gpuid.smi.fast``)
or, when that declines, the full parser (``gpuid.smi.xml``), and normalises the
values (``gpuid.smi.values``). Only a reply with no document, a refused one, or
one where no GPU has a usable UUID is a ``ParseError``; anything less costs a
value or a GPU, noted in the report.

Caps: real 8-GPU replies are 90 KB (H100) to 360 KB (B200) with 4,000-12,000
tags; a MIG node with every slice busy adds ~100 KB of devices and ~250 KB of
processes. ``MAX_BYTES`` (4 MiB), ``MAX_TAGS`` (100,000) and ``MAX_GPUS`` (64) leave
5-10x that. The worst replies within them (``python -m bench.parse``) peak at
~40 MiB over baseline and take up to ~300 ms on the full parser, so a caller on an
event loop parses large replies in a worker thread (``asyncio.to_thread``): every
long step gives the GIL back within a few tens of milliseconds.

Duplicate GPU UUIDs in one report (sanitised captures, broken firmware) are
kept as separate ``GpuFacts``, which still differ by index and PCI slot;
``duplicate_uuids`` names them so the caller can log and count the anomaly.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping
from typing import TypeVar

from gpuid.errors import ParseError
from gpuid.records import GpuFacts, MigDevice, SkippedGpu, SmiListing, SmiReport
from gpuid.smi.document import MAX_BYTES, MAX_TAGS, WARNING_CHARS, extract
from gpuid.smi.fast import read_fast
from gpuid.smi.fields import MAX_GPUS, RawReport
from gpuid.smi.lexical import Fallback
from gpuid.smi.values import GPU_UUID, MIG_UUID, Normalizer, classify
from gpuid.smi.xml import read_full

__all__ = [
    "MAX_BYTES",
    "MAX_GPUS",
    "MAX_TAGS",
    "duplicate_uuids",
    "merge_mig",
    "parse_smi_list",
    "parse_smi_xml",
]

_GPU_START = re.compile(r"GPU\s+\d+:")
_GPU_LINE = re.compile(r"GPU\s+\d+:.*\(UUID:\s*(GPU-[^\s)]*)\)")
_MIG_LINE = re.compile(r"MIG\s+(\S+)\s+Device\s+\d+:\s*\(UUID:\s*(MIG-[^\s)]*)\)")
_MAX_LIST_WARNINGS = 20
_UNKNOWN_MIG = MigDevice(uuid=None, profile=None, gpu_instance_id=None, compute_instance_id=None)
T = TypeVar("T")


def parse_smi_xml(data: bytes, *, max_bytes: int = MAX_BYTES, fast: bool = True) -> SmiReport:
    """Parse ``nvidia-smi -q -x`` output; ``ParseError`` if it holds no usable report.

    ``fast=False`` skips the fast path (the tests compare the two readers).
    """
    doc = extract(data, max_bytes=max_bytes)
    used_fast = fast
    try:
        if not fast:
            raise Fallback
        raw = read_fast(doc)
    except Fallback:
        raw, used_fast = read_full(doc), False
    return _report(raw, doc.warnings, used_fast)


def _report(raw: RawReport, warnings: tuple[str, ...], fast: bool) -> SmiReport:
    if not raw.gpus:
        raise ParseError("nvidia-smi XML lists no <gpu> elements")
    values = Normalizer()
    read = [values.gpu(i, gpu) for i, gpu in enumerate(raw.gpus)]
    gpus = tuple(g for g in read if isinstance(g, GpuFacts))
    skipped = tuple(g for g in read if isinstance(g, SkippedGpu))
    if not gpus:
        said = "; ".join(f"GPU {s.index} (PCI {s.pci_bus_id or '?'}): {s.reason}" for s in skipped[:3])
        raise ParseError(f"nvidia-smi XML has no GPU with a usable UUID: {said}")
    driver = values.text(raw.head.get("driver_version"), None, "driver_version")
    if driver is None:
        driver = values.text(raw.head.get("kmd_version"), None, "driver_version")
    return SmiReport(
        driver_version=driver,
        cuda_version=values.text(raw.head.get("cuda_version"), None, "cuda_version"),
        gpus=gpus,
        warnings=warnings,
        skipped=skipped,
        nulled=tuple(values.nulled),
        fast_path=fast,
    )


def duplicate_uuids(report: SmiReport) -> list[str]:
    """UUIDs that more than one GPU of ``report`` claims, in order of first appearance."""
    counts = Counter(g.gpu_uuid for g in report.gpus)
    return [uuid for uuid, n in counts.items() if n > 1]


def parse_smi_list(text: str) -> SmiListing:
    """Each GPU UUID in ``nvidia-smi -L`` output with its MIG devices, in listed order.

    Any other line (warnings, a GPU or MIG line without a usable UUID, a MIG line
    before any GPU) is returned as a warning, cut to 200 printable characters.
    """
    found: dict[str, list[MigDevice]] = {}
    warnings: list[str] = []
    current: list[MigDevice] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if _GPU_START.match(line):  # a new GPU, whose UUID may be unusable: its MIG lines too
            gpu = _GPU_LINE.match(line)
            uuid = classify(gpu[1])[0] if gpu else None
            current = found.setdefault(uuid, []) if uuid and GPU_UUID.fullmatch(uuid) else None
            if current is not None:
                continue
        elif (mig := _MIG_LINE.match(line)) and current is not None:
            device = _listed_mig(mig[2], mig[1])
            if device is not None:
                current.append(device)
                continue
        if len(warnings) < _MAX_LIST_WARNINGS:
            warnings.append(
                " ".join("".join(c if c.isprintable() else " " for c in line).split())[:WARNING_CHARS]
            )
    return SmiListing({uuid: tuple(devices) for uuid, devices in found.items()}, tuple(warnings))


def _listed_mig(uuid_text: str, profile_text: str) -> MigDevice | None:
    uuid = classify(uuid_text)[0]
    shape = MIG_UUID.fullmatch(uuid) if uuid else None
    if shape is None:
        return None
    gi, ci = (int(shape[1]), int(shape[2])) if shape[1] else (None, None)
    return MigDevice(uuid=uuid, profile=classify(profile_text)[0], gpu_instance_id=gi, compute_instance_id=ci)


def merge_mig(report: SmiReport, listing: SmiListing | Mapping[str, tuple[MigDevice, ...]]) -> SmiReport:
    """Fill MIG UUIDs/profiles from ``-L`` into the XML's devices, matched by position.

    ``-L`` decides which devices exist; the XML supplies whatever ``-L`` lacks
    (gpu/compute instance ids) for the positions both have.
    """
    devices = listing.devices if isinstance(listing, SmiListing) else listing
    return dataclasses.replace(
        report, gpus=tuple(_merge_gpu(g, devices.get(g.gpu_uuid, ())) for g in report.gpus)
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
