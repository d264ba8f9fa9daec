"""The identity fields gpuid reads from ``nvidia-smi -q -x``: where they sit and their raw form.

Two readers fill the same raw form: the byte-level fast path (``gpuid.smi.fast``)
and the full XML parser (``gpuid.smi.xml``); ``gpuid.smi.values`` turns it into
records. Sharing one table and one raw form is what lets the tests prove the two
readers agree.

The reading rules both follow (on a well-formed document they are exact XML
semantics; on a damaged one both read by position):
- node fields are direct children of ``<nvidia_smi_log>`` before its first ``<gpu>``;
- a GPU is a direct child ``<gpu>``; its fields are direct children (or children
  of the groups below) read only before its ``<processes>``/``<accounted_processes>``,
  which hold text any local user controls (process names);
- the first element of a name wins; a later one is ignored;
- a leaf's value is all the text inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuid.errors import ParseError

HEAD = ("driver_version", "kmd_version", "cuda_version")
GPU_LEAVES = (
    "product_name",
    "product_architecture",
    "serial",
    "uuid",
    "gpu_module_id",
    "vbios_version",
    "board_part_number",
    "gpu_part_number",
)
# group element -> {child element: raw field name}
GPU_GROUPS: dict[str, dict[str, str]] = {
    "mig_mode": {"current_mig": "mig_mode"},
    "platformInfo": {"chassis_serial_number": "chassis_serial", "module_id": "module_id"},
    "pci": {"pci_bus_id": "pci_bus_id"},
}
MIG_LIST = "mig_devices"
MIG_ITEM = "mig_device"
MIG_LEAVES = ("uuid", "profile", "gpu_instance_id", "compute_instance_id")
STOPS = ("processes", "accounted_processes")
ROOT = "nvidia_smi_log"
# Real nodes have up to 16 GPUs (8 on HGX boards, 4 on an NVL72 compute tray): more is not a real reply.
MAX_GPUS = 64
GPU = "gpu"

# Stands in for a value that could not be read (broken markup, bad bytes); values.py nulls it as
# "invalid", exactly as it does any value holding U+FFFD.
DAMAGED = "\ufffd"

Fields = dict[str, str]


def too_many_gpus() -> ParseError:
    return ParseError(f"nvidia-smi XML lists more than {MAX_GPUS} GPUs (refused)")


@dataclass
class RawGpu:
    """One ``<gpu>`` as read: raw texts by field name (``id`` is the element's attribute)."""

    fields: Fields = field(default_factory=dict)
    migs: list[Fields] = field(default_factory=list)


@dataclass
class RawReport:
    """The node fields and GPUs of one document, before normalisation."""

    head: Fields = field(default_factory=dict)
    gpus: list[RawGpu] = field(default_factory=list)
