"""From raw texts to the values a record may hold: placeholders, caps, shapes and ranges.

nvidia-smi prints NVML's "no value" and error strings where a value should be
(``N/A``, ``[Unknown Error]``, ``[GPU is lost]``, ``REDACTED``, a serial of zeros);
none of them is an identity, so every one becomes null. A kept string is at most
256 characters, holds no control character, and a UUID has NVIDIA's shape; an
integer fits PostgreSQL's ``integer``. Whatever is nulled for a reason other than
"absent", empty or ``N/A`` (nvidia-smi's ordinary "not applicable") is noted, so
the caller can count and log it; a GPU without a usable UUID is skipped and noted.
"""

from __future__ import annotations

import re

from gpuid.records import GpuFacts, MigDevice, NulledField, SkippedGpu
from gpuid.smi.fields import Fields, RawGpu

MAX_CHARS = 256
INT32_MAX = 2**31 - 1
PLACEHOLDER, TOO_LONG, INVALID = "placeholder", "too_long", "invalid"
_XML_SPACE = " \t\r\n"
_NOT_APPLICABLE = frozenset({"", "n/a"})
# NVML's nvmlErrorString texts and the other stand-ins nvidia-smi prints, compared without
# brackets and case.
_PLACEHOLDERS = frozenset(
    {
        "unknown error",
        "unknown",
        "not supported",
        "insufficient permissions",
        "no permission",
        "gpu is lost",
        "not available",
        "not found",
        "redacted",
        "none",
        "uninitialized",
        "invalid argument",
        "timeout",
        "driver not loaded",
        "insufficient size",
        "insufficient memory",
        "no data",
        "corrupted inforom",
        "gpu requires reset",
        "requires reset",
        "in use by another client",
        "operating system",
        "function not found",
        "library not found",
        "rm version mismatch",
        "interrupt request issue",
        "insufficient external power",
        "not ready",
        "deprecated",
        "argument version mismatch",
    }
)
# C0/C1 controls, DEL, U+FFFD (what undecodable bytes became), non-characters, lone surrogates.
_BAD_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ufffd\ufffe\uffff\ud800-\udfff]")
_HEX_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
GPU_UUID = re.compile(f"GPU-{_HEX_UUID}")
MIG_UUID = re.compile(f"MIG-(?:{_HEX_UUID}|GPU-{_HEX_UUID}/([0-9]{{1,9}})/([0-9]{{1,9}}))")
# Before DTD v12 some drivers printed the board part (900-2G500-0040-000) as gpu_part_number;
# newer ones put the chip part (2330-885-A1) there instead.
_BOARD_PART = re.compile(r"[0-9A-Z]{3}-[0-9A-Z]{5}-[0-9A-Z]{4}-[0-9A-Z]{3}")


def classify(raw: str | None, *, serial: bool = False) -> tuple[str | None, str | None]:
    """``(value, None)`` for a usable value; ``(None, reason)`` otherwise (reason None: plain "absent")."""
    if raw is None:
        return None, None
    value = raw.strip(_XML_SPACE)
    if value.lower() in _NOT_APPLICABLE or value.lower() == "[n/a]":
        return None, None
    if len(value) > MAX_CHARS:
        return None, TOO_LONG
    core = value.strip("[]").strip(_XML_SPACE).lower()
    if core in _PLACEHOLDERS or (serial and not core.replace("-", "").strip("0")):
        return None, PLACEHOLDER
    if _BAD_CHAR.search(value):
        return None, INVALID
    return value, None


class Normalizer:
    """Turns raw fields into values, collecting a ``NulledField`` for each value it drops."""

    def __init__(self) -> None:
        self.nulled: list[NulledField] = []

    def text(self, raw: str | None, gpu: int | None, name: str, *, serial: bool = False) -> str | None:
        value, reason = classify(raw, serial=serial)
        if reason is not None:
            self.nulled.append(NulledField(gpu, name, reason))
        return value

    def integer(self, raw: str | None, gpu: int | None, name: str) -> int | None:
        value = self.text(raw, gpu, name)
        if value is None:
            return None
        if value.isascii() and value.isdigit() and int(value) <= INT32_MAX:
            return int(value)
        self.nulled.append(NulledField(gpu, name, INVALID))
        return None

    def mig_uuid(self, raw: str | None, gpu: int, name: str) -> str | None:
        value = self.text(raw, gpu, name)
        if value is not None and not MIG_UUID.fullmatch(value):
            self.nulled.append(NulledField(gpu, name, INVALID))
            return None
        return value

    def gpu(self, index: int, raw: RawGpu) -> GpuFacts | SkippedGpu:
        f = raw.fields
        uuid, reason = classify(f.get("uuid"))
        if uuid is None or not GPU_UUID.fullmatch(uuid):
            where = classify(f.get("pci_bus_id"))[0] or classify(f.get("id"))[0]
            return SkippedGpu(index, where, f"uuid_{reason or ('missing' if uuid is None else INVALID)}")
        serial = self.text(f.get("serial"), index, "gpu_serial", serial=True)
        chassis = self.text(f.get("chassis_serial"), index, "chassis_serial", serial=True)
        module_id = self.integer(f.get("module_id"), index, "module_id")
        if module_id is None:
            module_id = self.integer(f.get("gpu_module_id"), index, "module_id")
        pci_bus_id = self.text(f.get("pci_bus_id"), index, "pci_bus_id") or classify(f.get("id"))[0]
        product_name = self.text(f.get("product_name"), index, "product_name")
        architecture = self.text(f.get("product_architecture"), index, "product_architecture")
        board = self.text(f.get("board_part_number"), index, "board_part_number", serial=True)
        legacy_part = classify(f.get("gpu_part_number"), serial=True)[0]
        if board is None and legacy_part is not None and _BOARD_PART.fullmatch(legacy_part):
            board = legacy_part
        return GpuFacts(
            gpu_uuid=uuid,
            gpu_serial=serial,
            chassis_serial=chassis,
            module_id=module_id,
            gpu_index=index,
            pci_bus_id=pci_bus_id,
            product_name=product_name,
            product_architecture=architecture,
            board_part_number=board,
            vbios_version=self.text(f.get("vbios_version"), index, "vbios_version"),
            mig_mode=self.text(f.get("mig_mode"), index, "mig_mode"),
            mig_devices=tuple(self._mig(index, j, m) for j, m in enumerate(raw.migs)),
        )

    def _mig(self, gpu: int, j: int, m: Fields) -> MigDevice:
        at = f"mig_devices[{j}]."
        return MigDevice(
            uuid=self.mig_uuid(m.get("uuid"), gpu, at + "uuid"),
            profile=self.text(m.get("profile"), gpu, at + "profile"),
            gpu_instance_id=self.integer(m.get("gpu_instance_id"), gpu, at + "gpu_instance_id"),
            compute_instance_id=self.integer(m.get("compute_instance_id"), gpu, at + "compute_instance_id"),
        )
