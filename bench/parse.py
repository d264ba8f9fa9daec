"""How fast is ``parse_smi_xml`` next to a bare ElementTree parse of the same bytes?

Run from the repo root: ``python -m bench.parse``. Uses the real 8 x H100
capture; prints microseconds per GPU (best of several repeats) so the figure
is comparable across captures of different sizes.
"""

from __future__ import annotations

import timeit
import xml.etree.ElementTree as ET
from collections.abc import Callable

from gpuid.smi.parse import parse_smi_xml
from tests.support.records import capture_path

CAPTURE = capture_path("gpuid-h100-sxm-x8")
REPEATS = 7


def etree_uuids(data: bytes) -> list[str]:
    """The least an etree-based reader must do: build the tree, pull each GPU's UUID."""
    return [(gpu.findtext("uuid") or "").strip() for gpu in ET.fromstring(data).iterfind("gpu")]


def best_seconds(func: Callable[[], object]) -> float:
    """Best time of one call over REPEATS runs, each long enough (>= 0.2 s) to trust."""
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=REPEATS, number=number)) / number


def main() -> None:
    data = CAPTURE.read_bytes()
    report = parse_smi_xml(data)
    gpus = len(report.gpus)
    if [g.gpu_uuid for g in report.gpus] != etree_uuids(data):
        raise SystemExit("parse_smi_xml and etree disagree on the UUIDs")

    per_gpu = {
        name: best_seconds(func) * 1e6 / gpus
        for name, func in (
            ("parse_smi_xml", lambda: parse_smi_xml(data)),
            ("etree fromstring", lambda: ET.fromstring(data)),
            ("etree fromstring + UUIDs", lambda: etree_uuids(data)),
        )
    }
    ours, tree, tree_uuids = per_gpu.values()
    print(f"input: {CAPTURE.name} ({len(data)} bytes, {gpus} GPUs), best of {REPEATS} repeats")
    for name, micros in per_gpu.items():
        print(f"  {name:<26} {micros:8.1f} µs/GPU")
    print(
        f"parse_smi_xml: {ours:.1f} µs/GPU  (etree fromstring: {tree:.1f} µs/GPU, ratio {ours / tree:.2f}x;"
        f" etree + UUIDs: {tree_uuids:.1f} µs/GPU, ratio {ours / tree_uuids:.2f}x)"
    )


if __name__ == "__main__":
    main()
