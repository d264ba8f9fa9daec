"""What the fleet signals cost at fleet scale: per scan, per arrival, per scrape — each next to its bound.

Run from the repo root: ``python -m bench.signals [--nodes 5000]``. In-process:
a ``FleetTracker`` knowing ``--nodes`` 8 x H100 nodes (real capture), with
``GPU_INFO_METRIC`` and ``NODE_GPU_METRICS`` on.

1. scan: ``on_scanned`` of a node whose GPUs did not change (the common
   case), next to 1 % of the 100 ms an exec takes in the fleet benchmark;
2. swap: ``on_scanned`` of a node with one GPU replaced, which searches every
   other node's state for where the new GPU was (the move check);
3. scrape: rendering /metrics with one ``gpuid_gpu_info`` series per GPU,
   next to 1 s (Prometheus' default scrape timeout is 10 s); and its size.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import time
from typing import Any

from gpuid.delivery.delivery import Delivery
from gpuid.fleet.settings import FleetSettings
from gpuid.fleet.tracker import FleetTracker
from gpuid.kube.objects import NodeInfo, PodInfo
from gpuid.log import configure_logging
from gpuid.metrics import Metrics
from gpuid.records import GPUReading, readings_from_report
from gpuid.smi.parse import parse_smi_xml
from tests.support.records import capture_path

SCAN_BOUND_US = 1000.0  # 1 % of a 100 ms exec
RENDER_BOUND_S = 1.0


def row(name: str, figure: str, bound: str, ratio: float) -> None:
    print(f"  {name:<44} {figure:>12}  {bound:>14}  {ratio:6.2f}x", flush=True)


def node_readings(report: Any, node: str, i: int) -> list[GPUReading]:
    readings = readings_from_report(
        report, cluster="b", node=node, machine=f"i-{i:08x}", source="ns/p", pod_uid=node
    )
    return [
        dataclasses.replace(r, gpu_uuid=f"{r.gpu_uuid[:-8]}{i:08x}", gpu_serial=f"{i:06d}{n}")
        for n, r in enumerate(readings)
    ]


def best(func: Any, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


async def run(nodes: int) -> None:
    report = parse_smi_xml(capture_path("gpuid-h100-sxm-x8").read_bytes())
    metrics = Metrics()
    settings = FleetSettings(gpu_info=True, node_metrics=True)
    tracker = FleetTracker(settings, cluster="b", delivery=Delivery([], metrics), metrics=metrics)
    tracker.start_term()
    fleet = {f"node-{i:05d}": node_readings(report, f"node-{i:05d}", i) for i in range(nodes)}
    pods = {n: PodInfo(n, f"dp-{n}", "gpu-operator", n, True, 0, ("c",), None) for n in fleet}
    for i, node in enumerate(fleet):
        tracker.on_node_event("ADDED", NodeInfo(node, f"i-{i:08x}", uid=node, gpu_capacity=8))
        tracker.on_scanned(pods[node], fleet[node])
    print(f"{nodes} nodes x 8 GPUs known; GPU_INFO_METRIC and NODE_GPU_METRICS on")
    target = "node-00000"
    per_scan = (
        best(lambda: [tracker.on_scanned(pods[target], fleet[target]) for _ in range(1000)]) / 1000 * 1e6
    )
    row(
        "unchanged node rescanned (us)", f"{per_scan:.1f}", f"< {SCAN_BOUND_US:.0f}", per_scan / SCAN_BOUND_US
    )
    swapped = list(fleet[target])
    swaps = []
    for n in range(200):
        swapped[1] = dataclasses.replace(swapped[1], gpu_uuid=f"GPU-swap-{n}", gpu_serial=f"9{n:012d}")
        start = time.perf_counter()
        tracker.on_scanned(pods[target], list(swapped))
        swaps.append(time.perf_counter() - start)
    per_swap = min(swaps) * 1e6
    row(
        "node with a swapped GPU (us, move check)",
        f"{per_swap:.1f}",
        f"< {SCAN_BOUND_US:.0f}",
        per_swap / SCAN_BOUND_US,
    )
    seconds = best(metrics.render, 3)
    size = len(metrics.render())
    row("/metrics render (s)", f"{seconds:.3f}", f"< {RENDER_BOUND_S:.1f}", seconds / RENDER_BOUND_S)
    print(
        f"  /metrics size: {size / 1e6:.1f} MB for {nodes * 8} gpuid_gpu_info series"
        f" ({size / (nodes * 8):.0f} B each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.signals")
    parser.add_argument("--nodes", type=int, default=5000)
    args, _ = parser.parse_known_args()
    configure_logging("info", "json", stream=io.StringIO())  # a gpu_changed line per swap: not the figures
    asyncio.run(run(args.nodes))


if __name__ == "__main__":
    main()
