"""How fast, how big and how long is parsing ``nvidia-smi -q -x`` output?

Run from the repo root: ``python -m bench.parse``. Prints, each next to its bound:

- µs per GPU of ``parse_smi_xml`` (fast path) on the real 8 x H100 capture, of the
  full parser on the same bytes, and of a bare ``ElementTree.fromstring``;
- for each worst accepted reply at the caps (``bench.parse_cases``): peak RSS over
  baseline, measured in a child process, against the 64 MiB budget, and the time of
  one call on each path;
- the longest stall of an event loop while the slowest of them is parsed in a
  worker thread (``asyncio.to_thread``), as ``gpuid.smiread`` does for large replies.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import timeit
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from bench.parse_cases import CAPTURE, CASES
from gpuid.smi.document import MAX_BYTES
from gpuid.smi.parse import parse_smi_xml

REPEATS = 7
RSS_BUDGET_MIB = 64
RATIO_BOUND = 1.0


def best_seconds(func: Callable[[], object]) -> float:
    """Best time of one call over REPEATS runs, each long enough (>= 0.2 s) to trust."""
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=REPEATS, number=number)) / number


def speed() -> None:
    data = CAPTURE.read_bytes()
    report = parse_smi_xml(data)
    gpus = len(report.gpus)
    uuids = [(g.findtext("uuid") or "").strip() for g in ET.fromstring(data).iterfind("gpu")]
    if [g.gpu_uuid for g in report.gpus] != uuids or not report.fast_path:
        raise SystemExit("the fast path did not read the capture, or disagrees with ElementTree")
    fast, full, tree = (
        best_seconds(func) * 1e6 / gpus
        for func in (
            lambda: parse_smi_xml(data),
            lambda: parse_smi_xml(data, fast=False),
            lambda: ET.fromstring(data),
        )
    )
    print(f"input: {CAPTURE.name} ({len(data)} bytes, {gpus} GPUs), best of {REPEATS} repeats")
    print(f"  parse_smi_xml (fast path)   {fast:8.1f} µs/GPU")
    print(f"  parse_smi_xml (full parser) {full:8.1f} µs/GPU")
    print(f"  ElementTree.fromstring      {tree:8.1f} µs/GPU")
    verdict = "ok" if fast / tree <= RATIO_BOUND else "OVER"
    ratio = f"{fast / tree:.2f}x a bare fromstring (bound {RATIO_BOUND:.1f}x)"
    print(f"parse_smi_xml: {fast:.1f} µs/GPU, {ratio} {verdict}")


def child(path: str, fast: bool) -> None:
    """In a fresh process: peak RSS growth and wall time of one parse of the file at ``path``.

    The kernel's high-water mark is reset just before the parse (``clear_refs``), so the
    peak is the parse's own, not the interpreter's start or the file read's.
    """
    data = Path(path).read_bytes()
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _status_kib("VmHWM")
    started = time.perf_counter()
    parse_smi_xml(data, fast=fast)
    seconds = time.perf_counter() - started
    print(json.dumps({"mib": (_status_kib("VmHWM") - baseline) / 1024, "ms": seconds * 1e3}))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(path: Path, fast: bool) -> dict[str, float]:
    argv = [sys.executable, "-m", "bench.parse", "--child", str(path), "fast" if fast else "full"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    result: dict[str, float] = json.loads(done.stdout)
    return result


async def loop_stall(data: bytes) -> tuple[float, float]:
    """(longest event-loop stall, parse time) in ms while ``data`` is parsed in a worker thread."""
    loop = asyncio.get_running_loop()
    worst, parsing = 0.0, True

    async def tick() -> None:
        nonlocal worst
        while parsing:
            before = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - before - 0.001)

    ticker = asyncio.create_task(tick())
    started = loop.time()
    await asyncio.to_thread(parse_smi_xml, data, fast=False)
    took = loop.time() - started
    parsing = False
    await ticker
    return worst * 1e3, took * 1e3


def worst_cases() -> None:
    print(f"worst accepted replies at the caps ({MAX_BYTES // 2**20} MiB), one call each, child processes:")
    rss, slowest, slowest_case = 0.0, 0.0, ""
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in CASES.items():
            path = Path(tmp) / "reply.xml"
            path.write_bytes(build())
            fast, full = measure(path, True), measure(path, False)
            rss = max(rss, fast["mib"], full["mib"])
            if max(fast["ms"], full["ms"]) > slowest:
                slowest, slowest_case = max(fast["ms"], full["ms"]), name
            print(
                f"  {name:<36} peak +{max(fast['mib'], full['mib']):5.1f} MiB"
                f"   fast path {fast['ms']:6.1f} ms   full parser {full['ms']:6.1f} ms"
            )
    verdict = "ok" if rss <= RSS_BUDGET_MIB else "OVER"
    print(f"worst peak RSS over baseline: {rss:.1f} MiB (budget {RSS_BUDGET_MIB} MiB) {verdict}")
    print(
        f"longest single call: {slowest:.1f} ms ({slowest_case}); replies over 256 KiB are parsed in a thread"
    )
    stall, took = asyncio.run(loop_stall(CASES[slowest_case]()))
    print(f"event loop while that reply is parsed in a thread: longest stall {stall:.1f} ms", end="")
    print(f" (parse {took:.1f} ms)")


def main() -> None:
    speed()
    worst_cases()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3] == "fast")
    else:
        main()
