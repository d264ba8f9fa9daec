"""Pure parsers that turn ``nvidia-smi`` output into GPU facts.

Exec hands us raw bytes from ``nvidia-smi -q -x`` (and ``-L`` text when MIG is
on); this module turns them into ``SmiReport``/``GpuFacts`` without any I/O, so
every driver quirk is tested against captured output.

The XML comes from a process we do not control, so expat parses it as a stream:
a DOCTYPE is allowed only as the plain external reference real drivers print
(the DTD is never loaded); an internal subset, an entity declaration or a
reference to an undeclared entity is a ``ParseError``. Only the elements we
need are matched, each at its exact path (a ``uuid`` anywhere but directly
under ``<gpu>`` is not the GPU UUID); every other subtree is skipped.

Duplicate GPU UUIDs in one report (sanitised captures, broken firmware) are
kept as separate ``GpuFacts``, which still differ by index and PCI slot, rather
than failing the whole node or silently dropping a board; ``duplicate_uuids``
names them so the caller can log and count the anomaly.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import NoReturn, TypeAlias, TypeVar
from xml.parsers import expat

from gpuid.errors import ParseError
from gpuid.records import GpuFacts, MigDevice, SmiReport

# A trie of the element paths we keep: a dict descends, a str names a leaf
# whose text is captured; anything else is skipped with its whole subtree.
_Node: TypeAlias = dict[str, "_Node | str"]
_MIG_DEVICE: _Node = {k: k for k in ("uuid", "profile", "gpu_instance_id", "compute_instance_id")}
_GPU: _Node = {
    **{k: k for k in ("uuid", "serial", "gpu_module_id", "product_name", "product_architecture")},
    **{k: k for k in ("vbios_version", "board_part_number", "gpu_part_number")},
    "platformInfo": {"chassis_serial_number": "chassis_serial", "module_id": "module_id"},
    "pci": {"pci_bus_id": "pci_bus_id"},
    "mig_mode": {"current_mig": "mig_mode"},
    "mig_devices": {"mig_device": _MIG_DEVICE},
}
_ROOT: _Node = {**{k: k for k in ("driver_version", "kmd_version", "cuda_version")}, "gpu": _GPU}

_NULLS = frozenset({"", "N/A", "[N/A]"})
# Before DTD v12 some drivers printed the board part (900-2G500-0040-000) as
# gpu_part_number; newer ones put the chip part (2330-885-A1) there instead.
_BOARD_PART = re.compile(r"[0-9A-Z]{3}-[0-9A-Z]{5}-[0-9A-Z]{4}-[0-9A-Z]{3}")
_GPU_LINE = re.compile(r"GPU\s+\d+:.*\(UUID:\s*(GPU-[^\s)]+)\)")
_MIG_LINE = re.compile(r"MIG\s+(\S+)\s+Device\s+\d+:\s*\(UUID:\s*(MIG-[^\s)]+)\)")
_OLD_MIG_UUID = re.compile(r"MIG-GPU-[^/]+/(\d+)/(\d+)")
_UNKNOWN_MIG = MigDevice(uuid=None, profile=None, gpu_instance_id=None, compute_instance_id=None)
T = TypeVar("T")


class _Collector:
    """expat callbacks that keep the matched leaves of the root, each GPU and each MIG device."""

    def __init__(self) -> None:
        self.parser = p = expat.ParserCreate()
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.buffer_text = True
        p.StartDoctypeDeclHandler = self._doctype
        p.EntityDeclHandler = self._refuse_entity
        p.SkippedEntityHandler = self._refuse_entity
        p.ExternalEntityRefHandler = self._refuse_entity
        p.StartElementHandler = self._start_root
        p.EndElementHandler = self._end
        self.root: dict[str, str] = {}
        self.gpus: list[tuple[dict[str, str], list[dict[str, str]]]] = []
        self._record = self.root
        self._stack: list[_Node | str] = [_ROOT]
        self._skipped = 0  # depth inside an element we do not need
        self._text: list[str] = []

    def _doctype(self, name: str, sysid: str | None, pubid: str | None, has_internal_subset: int) -> None:
        if has_internal_subset:
            raise ParseError("nvidia-smi XML has a DOCTYPE internal subset (refused)")

    def _refuse_entity(self, *_: object) -> NoReturn:
        raise ParseError("nvidia-smi XML declares or references an entity (refused)")

    def _start_root(self, name: str, attrs: dict[str, str]) -> None:
        if name != "nvidia_smi_log":
            raise ParseError(f"root element is <{name[:40]}>, expected <nvidia_smi_log>")
        self.parser.StartElementHandler = self._start

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        parent = self._stack[-1]
        node = parent.get(name) if isinstance(parent, dict) else None
        if node is None:  # most of the document: skip the subtree with cheaper handlers
            self.parser.StartElementHandler = self._skip_start
            self.parser.EndElementHandler = self._skip_end
            return
        self._stack.append(node)
        if isinstance(node, str):
            self._text = []
            self.parser.CharacterDataHandler = self._text.append
        elif node is _GPU:
            self._record = {"id": attrs.get("id", "")}
            self.gpus.append((self._record, []))
        elif node is _MIG_DEVICE:
            self._record = {}
            self.gpus[-1][1].append(self._record)

    def _end(self, name: str) -> None:
        node = self._stack.pop()
        if isinstance(node, str):
            self._record[node] = "".join(self._text)
            self.parser.CharacterDataHandler = None
        elif node is _GPU:
            self._record = self.root
        elif node is _MIG_DEVICE:
            self._record = self.gpus[-1][0]

    def _skip_start(self, name: str, attrs: dict[str, str]) -> None:
        self._skipped += 1

    def _skip_end(self, name: str) -> None:
        if self._skipped:
            self._skipped -= 1
        else:
            self.parser.StartElementHandler = self._start
            self.parser.EndElementHandler = self._end


def parse_smi_xml(data: bytes) -> SmiReport:
    """Parse ``nvidia-smi -q -x`` output; ``ParseError`` if it is not a usable report."""
    if not data or data.isspace():
        raise ParseError("nvidia-smi printed nothing")
    collector = _Collector()
    try:
        collector.parser.Parse(data, True)
    except expat.ExpatError as e:
        head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:200]  # error path only: the copy is fine
        if not head.startswith(b"<"):
            line = head.decode("utf-8", "replace").partition("\n")[0].strip()[:80]
            raise ParseError(f"nvidia-smi output is not XML: {line!r}") from e
        where = f"line {e.lineno}, column {e.offset}"
        raise ParseError(f"nvidia-smi XML is malformed: {expat.ErrorString(e.code)} at {where}") from e
    if not collector.gpus:
        raise ParseError("nvidia-smi XML lists no <gpu> elements")
    root = collector.root
    return SmiReport(
        driver_version=_text(root.get("driver_version")) or _text(root.get("kmd_version")),
        cuda_version=_text(root.get("cuda_version")),
        gpus=tuple(_gpu_facts(i, fields, migs) for i, (fields, migs) in enumerate(collector.gpus)),
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
