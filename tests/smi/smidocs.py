"""Shared inputs for the nvidia-smi parser tests: captures, hand-made documents, both readers."""

from __future__ import annotations

from gpuid.records import SmiReport
from gpuid.smi.parse import parse_smi_xml
from tests.support.records import BUNDLED, SMI_FIXTURES, capture_path, xml_captures

LIST_DIR = SMI_FIXTURES / "list"
SIM_CAPTURES = BUNDLED
CAPTURES = [p.name for p in xml_captures()]  # every real capture, bundled or fixture
H100 = "gpuid-h100-sxm-x8.xml"

UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
UUID2 = "GPU-01234567-89ab-cdef-0123-456789abcdef"
MIG0 = "MIG-4d0efb7d-0970-51d9-b761-0686be6b8af3"
MIG1 = "MIG-5b2c3a10-1111-2222-3333-444455556666"


def xml(name: str) -> bytes:
    return capture_path(name.removesuffix(".xml")).read_bytes()


def smi_doc(gpus: str, top: str = "<driver_version>570.86.15</driver_version>") -> bytes:
    """A minimal ``nvidia-smi -q -x`` document around hand-written ``<gpu>`` elements."""
    return f'<?xml version="1.0" ?>\n<nvidia_smi_log>{top}{gpus}</nvidia_smi_log>\n'.encode()


def one_gpu(body: str) -> bytes:
    return smi_doc(f'<gpu id="00000000:01:00.0">{body}</gpu>')


def parse_both(data: bytes) -> SmiReport:
    """The report of ``data``, after checking that the fast path and the full parser agree on it."""
    full = parse_smi_xml(data, fast=False)
    fast = parse_smi_xml(data)
    assert fast == full
    assert not full.fast_path
    return fast
