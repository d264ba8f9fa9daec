"""How sweep time, CPU and responsiveness move with ``WORKERS`` at one exec latency (the default's basis).

Run from the repo root: ``python -m bench.workers [--exec 1.0] [--pods 2000] [--workers 16,64,128,256]``.
For each ``WORKERS`` a fresh gpuid sweeps ``--pods`` new pods on the
simulated API server (HTTPS). Printed per row: the sweep next to its latency
bound ``pods x exec / WORKERS``, gpuid's CPU use during it (1.00 = one core
busy the whole time: past that point more workers only queue), peak RSS,
and the slowest ``/healthz`` answer while it ran (what a liveness probe sees
when the event loop is saturated). A sweep lasts about
``max(pods x exec / WORKERS, pods x CPU per pod)``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time

import aiohttp

from bench.fleet import CAPTURE, GPUS, Scenario
from bench.procs import GpuidProcess, SimProcess, cpu_seconds, peak_rss_mb


async def slowest_health(port: int, stop: asyncio.Event) -> float:
    """The slowest ``/healthz`` round trip (ms), asked every 100 ms until ``stop``."""
    worst = 0.0
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            started = time.perf_counter()
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                await resp.read()
            worst = max(worst, (time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.1)
    return worst


async def one(sim: SimProcess, sc: Scenario) -> None:
    gpuid = GpuidProcess(sim.kubeconfig, NAMESPACE=f"w{sc.workers}", WORKERS=str(sc.workers))
    await gpuid.start()
    try:
        stop = asyncio.Event()
        health = asyncio.create_task(slowest_health(gpuid.port, stop))
        cpu0 = cpu_seconds(gpuid.pid)
        added = await sim.command(f"pods w{sc.workers} {sc.pods} {CAPTURE} {sc.exec_seconds} 1 w{sc.workers}")
        await gpuid.until(lambda: gpuid.records >= sc.pods * GPUS)
        sweep = time.time() - added["at"]
        cpu = cpu_seconds(gpuid.pid) - cpu0
        stop.set()
        worst = await health
        print(
            f"  {sc.workers:>7}  {sweep:8.2f}  {sc.bound:8.2f}  {sweep / sc.bound:6.2f}x  {cpu / sweep:8.2f}"
            f"  {cpu * 1000 / sc.pods:8.2f}  {peak_rss_mb(gpuid.pid):8.1f}  {worst:9.0f}",
            flush=True,
        )
    finally:
        await gpuid.stop()


async def run(args: argparse.Namespace) -> None:
    gc.freeze()
    sim = SimProcess(tls=True)
    await sim.start()
    print(f"{args.pods} pods x {GPUS} GPUs, exec {args.exec * 1000:.0f} ms, HTTPS;", end=" ")
    print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("  WORKERS  sweep s  bound s   ratio  CPU/core  ms/pod  RSS MiB  healthz ms")
    try:
        for workers in args.workers:
            await one(sim, Scenario(f"w{workers}", args.exec, workers, args.pods))
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n")[0])
    parser.add_argument("--exec", type=float, default=1.0, help="exec latency in seconds (default 1.0)")
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument(
        "--workers", type=lambda s: [int(w) for w in s.split(",")], default=[16, 64, 128, 256, 512]
    )
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
