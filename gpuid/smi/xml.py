"""From ``nvidia-smi -q -x`` bytes to the raw fields gpuid keeps, at the speed of a C parse.

An 8-GPU report has ~2,000 elements, of which gpuid keeps ~20 per GPU. An
expat handler per element costs more than the parse itself (a callback
design measured 1.5-2x a bare ``ElementTree.fromstring``), so the tree is
built in C by ElementTree (expat underneath) and Python then looks only at
the children of the elements on the paths we keep: ~90 per GPU instead of
~500 callbacks, about 1.15x a bare ``fromstring`` (``python -m bench.parse``).

Security stays where it was: the document comes from a process we do not
control, so before parsing, a DOCTYPE with an internal subset or any
``<!ENTITY`` declaration is refused (ElementTree would expand internal
entities); external DTDs and entities are never loaded (ElementTree does not
fetch), and a reference to an undeclared entity is a parse error.
"""

from __future__ import annotations

import gc
import xml.etree.ElementTree as ET
from typing import TypeAlias
from xml.parsers import expat

from gpuid.errors import ParseError

# A trie of the element paths we keep: a dict descends, a str names a leaf
# whose text is kept under that field name; any other element is skipped.
Node: TypeAlias = dict[str, "Node | str"]
MIG_DEVICE: Node = {k: k for k in ("uuid", "profile", "gpu_instance_id", "compute_instance_id")}
GPU: Node = {
    **{k: k for k in ("uuid", "serial", "gpu_module_id", "product_name", "product_architecture")},
    **{k: k for k in ("vbios_version", "board_part_number", "gpu_part_number")},
    "platformInfo": {"chassis_serial_number": "chassis_serial", "module_id": "module_id"},
    "pci": {"pci_bus_id": "pci_bus_id"},
    "mig_mode": {"current_mig": "mig_mode"},
    "mig_devices": {"mig_device": MIG_DEVICE},
}
ROOT: Node = {**{k: k for k in ("driver_version", "kmd_version", "cuda_version")}, "gpu": GPU}
ROOT_NAME = "nvidia_smi_log"
Fields = dict[str, str]
Gpus = list[tuple[Fields, list[Fields]]]


def collect(data: bytes) -> tuple[Fields, Gpus]:
    """Parse ``data``; return the root's fields and each GPU's fields and MIG devices.

    The tree's ~2,000 elements hold no reference cycles and die with this call, so the cyclic
    garbage collector is paused meanwhile: its scans, set off by those allocations, cost
    nearly as much as the parse in a process of gpuid's size.
    """
    _refuse_dtd(data)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _collect(data)
    finally:
        if was_enabled:
            gc.enable()


def _collect(data: bytes) -> tuple[Fields, Gpus]:
    try:
        root = ET.fromstring(data)  # noqa: S314 - DTDs and entity declarations refused above
    except ET.ParseError as e:
        head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:200]  # error path only: the copy is fine
        if not head.startswith(b"<"):
            line = head.decode("utf-8", "replace").partition("\n")[0].strip()[:80]
            raise ParseError(f"nvidia-smi output is not XML: {line!r}") from e
        line_no, column = e.position
        where = f"line {line_no}, column {column}"
        raise ParseError(f"nvidia-smi XML is malformed: {expat.ErrorString(e.code)} at {where}") from e
    if root.tag != ROOT_NAME:
        raise ParseError(f"root element is <{root.tag[:40]}>, expected <{ROOT_NAME}>")
    fields: Fields = {}
    gpus: Gpus = []
    _keep(root, ROOT, fields, gpus)
    return fields, gpus


def _keep(element: ET.Element, node: Node, record: Fields, gpus: Gpus) -> None:
    """Copy the wanted children of ``element`` (per ``node``) into ``record``/``gpus``."""
    for child in element:
        wanted = node.get(child.tag)
        if wanted is None:
            continue
        if isinstance(wanted, str):  # a leaf: its text, with any nested text, as expat reports it
            record[wanted] = "".join(child.itertext()) if len(child) else child.text or ""
        elif wanted is GPU:
            gpu: Fields = {"id": child.get("id", "")}
            gpus.append((gpu, []))
            _keep(child, GPU, gpu, gpus)
        elif wanted is MIG_DEVICE:
            device: Fields = {}
            gpus[-1][1].append(device)
            _keep(child, MIG_DEVICE, device, gpus)
        else:
            _keep(child, wanted, record, gpus)


def _refuse_dtd(data: bytes) -> None:
    """Refuse a DOCTYPE internal subset and entity declarations (a byte scan, before any parse)."""
    start = data.find(b"<!DOCTYPE")
    if start >= 0 and _has_internal_subset(data, start + len(b"<!DOCTYPE")):
        raise ParseError("nvidia-smi XML has a DOCTYPE internal subset (refused)")
    if b"<!ENTITY" in data:
        raise ParseError("nvidia-smi XML declares or references an entity (refused)")


def _has_internal_subset(data: bytes, pos: int) -> bool:
    """Whether the DOCTYPE declaration continuing at ``pos`` has a ``[...]`` part (quotes skipped).

    Real declarations are one short line; one that does not end within 4 KiB is refused too.
    """
    quote = 0
    for byte in data[pos : pos + 4096]:
        if quote:
            quote = 0 if byte == quote else quote
        elif byte in b"\"'":
            quote = byte
        elif byte == ord("["):
            return True
        elif byte == ord(">"):
            return False
    return True
