"""The worst replies the nvidia-smi parser accepts, built from the real 8 x H100 capture.

Each fills the parser's caps (``MAX_BYTES`` bytes, ``MAX_TAGS`` tags, ``MAX_GPUS``
GPUs) in one hostile way; ``bench.parse`` measures the memory and time of each.
"""

from __future__ import annotations

from collections.abc import Callable

from gpuid.smi.document import MAX_BYTES, MAX_TAGS
from gpuid.smi.fields import MAX_GPUS
from tests.support.records import capture_path

CAPTURE = capture_path("gpuid-h100-sxm-x8")
MARGIN = 4096  # below the caps, so every case is accepted


def _base() -> bytes:
    return CAPTURE.read_bytes()


def _room_for_tags(data: bytes) -> int:
    return MAX_TAGS - data.count(b"<", data.index(b"<nvidia_smi_log")) - 16


def _fill(data: bytes, unit: bytes, *, size: int = MAX_BYTES) -> bytes:
    """``data`` with ``unit`` repeated into its first <processes> until it is about ``size`` bytes."""
    count = max(0, (size - MARGIN - len(data)) // len(unit))
    return data.replace(b"<processes>", b"<processes>" + unit * count, 1)


def tiny_element_flood() -> bytes:
    base = _base()
    flood = base.replace(b"<processes>", b"<processes>" + b"<a/>" * _room_for_tags(base), 1)
    return _fill(flood, b"x")


def deep_nesting() -> bytes:
    base = _base()
    half = _room_for_tags(base) // 2
    return _fill(base.replace(b"<processes>", b"<processes>" + b"<a>" * half + b"</a>" * half, 1), b"x")


def deep_never_closed() -> bytes:
    base = _base()
    return _fill(base.replace(b"<processes>", b"<processes>" + b"<a>" * _room_for_tags(base), 1), b"x")


def megabyte_text_nodes() -> bytes:
    mib = 1024 * 1024
    data = _base().replace(b"<product_name>NVIDIA H100 80GB HBM3", b"<product_name>" + b"n" * mib, 1)
    name = b"<process_info><process_name>" + b"p" * (mib - 64) + b"</process_name></process_info>"
    return data.replace(b"<processes>", b"<processes>" + name * 2, 1)


def astral_text_node() -> bytes:
    text = _base().replace(
        b"<product_name>NVIDIA H100 80GB HBM3", b"<product_name>" + b"\xf0\x9f\x98\x80" * 2**18, 1
    )
    return _fill(text, b"\xf0\x9f\x98\x80")


def utf16_flood() -> bytes:
    return _utf("utf-16", 2)


def utf32_flood() -> bytes:
    return _utf("utf-32", 4)


def _utf(encoding: str, width: int) -> bytes:
    """As many tags as allowed, then CJK text up to the byte cap, in ``encoding`` (with a BOM)."""
    base = _base()
    text = base.replace(b"<processes>", b"<processes>" + b"<a/>" * _room_for_tags(base), 1).decode()
    room = (MAX_BYTES - MARGIN - len(text.encode(encoding))) // width
    return text.replace("<processes>", "<processes>" + "\u4e00" * max(room, 0), 1).encode(encoding)


def damage_everywhere() -> bytes:
    base = _base()
    broken = b"<a>&\x01<b"  # raw '&', a control character, markup that never closes
    data = base.replace(b"<processes>", b"<processes>" + broken * (_room_for_tags(base) // 2), 1)
    return _fill(data, b"\x01&\xff")


def every_gpu_salvaged() -> bytes:
    base = _base()
    start, end = base.index(b"<gpu "), base.rindex(b"</gpu>") + 6
    one = base[start : base.index(b"</gpu>") + 6].replace(b"<fan_speed>", b"<fan_speed><broken>")
    room = (MAX_BYTES - MARGIN - len(base) + (end - start) - MAX_GPUS * len(one)) // (2 * MAX_GPUS)
    one = one.replace(b"<processes>", b"<processes>" + b"&\x01" * room)
    return base[:start] + one * MAX_GPUS + base[end:]


CASES: dict[str, Callable[[], bytes]] = {
    "tiny-element flood": tiny_element_flood,
    "deep nesting": deep_nesting,
    "deep nesting, never closed": deep_never_closed,
    "1 MiB text nodes": megabyte_text_nodes,
    "4-byte characters in a field": astral_text_node,
    "UTF-16 flood": utf16_flood,
    "UTF-32 flood": utf32_flood,
    "damage everywhere": damage_everywhere,
    f"{MAX_GPUS} GPUs, each read by position": every_gpu_salvaged,
}
