"""The nvidia-smi output a simulated GPU node answers with.

A simulated node is only as useful as its ``nvidia-smi`` output, so the sim
replays real captures shipped inside the package (``gpuid/sim/captures/``,
read through :mod:`importlib.resources` so it works from a wheel too) instead
of inventing XML. ``nvidia-smi -L`` comes from a ``<name>.L.txt`` companion
when one was captured, otherwise it is derived from the XML, which is enough
for GPUs without MIG (the XML does not carry MIG device UUIDs).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

CAPTURE_PACKAGE = "gpuid.sim"
CAPTURE_DIR = "captures"

# The captures `demo_cluster()` cycles through: an HGX H100, a GB200 compute
# tray (two dies share each board serial) and an A100 in MIG mode.
DEMO_CAPTURES = ("gpuid-h100-sxm-x8", "gpuid-gb200-x4", "telegraf-a100-sxm4-mig")

_GPU_BLOCK = re.compile(rb"<gpu id=\"[^\"]*\">(.*?)</gpu>", re.DOTALL)
_PRODUCT = re.compile(rb"<product_name>\s*(.*?)\s*</product_name>", re.DOTALL)
_UUID = re.compile(rb"<uuid>\s*(.*?)\s*</uuid>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Capture:
    """What one node's ``nvidia-smi`` prints: ``-q -x`` and ``-L``."""

    name: str
    xml: bytes
    listing: bytes

    @classmethod
    def from_xml(cls, name: str, xml: bytes, listing: bytes | None = None) -> Capture:
        return cls(name=name, xml=xml, listing=synthesize_listing(xml) if listing is None else listing)

    def gpu_uuids(self) -> list[str]:
        """The ``GPU-…`` UUIDs in the XML, in document order (handy for assertions)."""
        return [
            m.group(1).decode()
            for block in _GPU_BLOCK.finditer(self.xml)
            if (m := _UUID.search(block.group(1)))
        ]


def synthesize_listing(xml: bytes) -> bytes:
    """Build ``nvidia-smi -L`` output (``GPU i: <product> (UUID: <uuid>)``) from ``-q -x`` XML."""
    lines = []
    for index, block in enumerate(_GPU_BLOCK.finditer(xml)):
        body = block.group(1)
        product = _PRODUCT.search(body)
        uuid = _UUID.search(body)
        name = product.group(1).decode() if product else "Unknown"
        ident = uuid.group(1).decode() if uuid else "N/A"
        lines.append(f"GPU {index}: {name} (UUID: {ident})\n")
    return "".join(lines).encode()


def bundled_capture_names() -> list[str]:
    """Names of the captures shipped in the package (file names without ``.xml``)."""
    root = resources.files(CAPTURE_PACKAGE).joinpath(CAPTURE_DIR)
    if not root.is_dir():
        return []
    return sorted(entry.name[: -len(".xml")] for entry in root.iterdir() if entry.name.endswith(".xml"))


@functools.cache
def bundled_capture(name: str) -> Capture:
    """Load a capture shipped in ``gpuid/sim/captures`` (cached: the bytes never change).

    Raises ``KeyError`` naming the available captures when there is none called ``name``.
    """
    root = resources.files(CAPTURE_PACKAGE).joinpath(CAPTURE_DIR)
    xml_file = root.joinpath(f"{name}.xml")
    if "/" in name or not xml_file.is_file():
        raise KeyError(f"no bundled nvidia-smi capture {name!r}; available: {bundled_capture_names()}")
    listing_file = root.joinpath(f"{name}.L.txt")
    listing = listing_file.read_bytes() if listing_file.is_file() else None
    return Capture.from_xml(name, xml_file.read_bytes(), listing)
