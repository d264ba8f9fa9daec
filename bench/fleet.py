"""Fleet-scale figures: sweep time and CPU per pod next to their bounds, API load, memory, idle, latency.

Run from the repo root: ``python -m bench.fleet [--pods 2000] [--profile] [--no-tls]``.
Three processes: the simulated API server (``bench.simproc``, HTTPS with a
self-signed CA as real API servers speak), gpuid (``python -m gpuid``,
stdout exporter, logs at info to /dev/null) and this driver, which reads
gpuid's records off its stdout and runs the comparison clients. Every exec
answers with the 89 KB 8 x H100 capture after the scenario's latency.

Two scenarios, each swept by three clients on the same number of pods:

- ``100 ms exec, 64 workers``: short enough that CPU, not latency, decides;
- ``1 s exec, 256 workers``: closer to ``nvidia-smi -q -x`` on 8-GPU nodes.

The clients: gpuid; the floor (``bench.floor``: bare aiohttp WebSocket exec
and a ``bytes.find`` pick of the identity fields, nothing else); and the
reference (``bench.reference``: kubernetes_asyncio as shipped, ``gc.freeze()``,
an ElementTree parse of the UUIDs). Bounds: the sweep's latency bound is
``pods x exec / workers`` (no client can beat it); the targets are a sweep
within 2.5x that bound and a CPU per pod within 2x the floor's. Then, on the
first scenario's gpuid: API requests per pod, peak RSS with ``--fleet`` pods
watched, idle CPU, and Ready → record latency; ``--profile`` adds the CPU
split of one more sweep sampled with py-spy (``bench.cpusplit``).
On a shared machine wall-clock figures stretch with the load (printed at
start and end) while CPU per pod moves far less; so each gpuid sweep is also
shown as projected on one free core, ``max(latency bound, pods x CPU per
pod)``, next to the share of a core gpuid actually got.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.cpusplit import Recording, report
from bench.floor import floor_sweep
from bench.procs import GpuidProcess, SimProcess, cpu_seconds, peak_rss_mb
from bench.reference import reference_sweep

CAPTURE = "gpuid-h100-sxm-x8"
GPUS = 8
SWEEP_TARGET = 2.5  # x the latency bound
CPU_TARGET = 2.0  # x the floor's CPU per pod
MEMORY_BOUND_MB = 150.0
IDLE_BOUND = 0.6  # CPU s/min: 1 % of one core


@dataclass(frozen=True)
class Scenario:
    key: str
    exec_seconds: float
    workers: int
    pods: int

    @property
    def bound(self) -> float:
        return self.pods * self.exec_seconds / self.workers

    @property
    def title(self) -> str:
        return (
            f"{self.pods} pods x {GPUS} GPUs, exec {self.exec_seconds * 1000:.0f} ms, {self.workers} workers"
        )


@dataclass(frozen=True)
class Sweep:
    seconds: float
    cpu_ms: float  # CPU per pod


def row(name: str, figure: str, bound: str, ratio: float, target: float | None = None) -> None:
    verdict = "" if target is None else f"  {'PASS' if ratio <= target else 'FAIL'} (target <= {target:g}x)"
    print(f"  {name:<36} {figure:>9}  {bound:>17}  {ratio:6.2f}x{verdict}", flush=True)


async def in_driver(sweep: Callable[[], Awaitable[tuple[float, int]]], sc: Scenario) -> Sweep:
    cpu = time.process_time()
    seconds, gpus = await sweep()
    assert gpus == sc.pods * GPUS, gpus
    return Sweep(seconds, (time.process_time() - cpu) * 1000 / sc.pods)


async def gpuid_sweep(sim: SimProcess, gpuid: GpuidProcess, sc: Scenario, prefix: str) -> Sweep:
    goal = gpuid.records + sc.pods * GPUS
    cpu0 = cpu_seconds(gpuid.pid)
    added = await sim.command(f"pods sweep-{sc.key} {sc.pods} {CAPTURE} {sc.exec_seconds} 1 {prefix}")
    await gpuid.until(lambda: gpuid.records >= goal)
    return Sweep(time.time() - added["at"], (cpu_seconds(gpuid.pid) - cpu0) * 1000 / sc.pods)


async def scenario(
    sim: SimProcess, sc: Scenario, args: argparse.Namespace, first: bool
) -> tuple[Sweep, Sweep]:
    print(f"sweep: {sc.title}; latency bound {sc.bound:.2f} s")
    await sim.command(f"pods ref-{sc.key} {sc.pods} {CAPTURE} {sc.exec_seconds} 1 ref{sc.key}")
    pods = [f"dp-ref{sc.key}-{i:05d}" for i in range(sc.pods)]
    floor = await in_driver(lambda: floor_sweep(sim.kubeconfig, f"ref-{sc.key}", pods, sc.workers), sc)
    ref = await in_driver(lambda: reference_sweep(sim.kubeconfig, f"ref-{sc.key}", pods, sc.workers), sc)
    gpuid = GpuidProcess(sim.kubeconfig, NAMESPACE=f"sweep-{sc.key}", WORKERS=str(sc.workers))
    await gpuid.start()
    try:
        await sim.command("reset")
        sim_cpu0 = cpu_seconds(sim.pid)
        ours = await gpuid_sweep(sim, gpuid, sc, f"sw{sc.key}")
        sim_cpu = cpu_seconds(sim.pid) - sim_cpu0
        bound = f"{sc.bound:.2f} latency"
        row("gpuid sweep (s)", f"{ours.seconds:.2f}", bound, ours.seconds / sc.bound, SWEEP_TARGET)
        alone = max(sc.bound, sc.pods * ours.cpu_ms / 1000)  # what one uncontended core would take
        row("  projected on one free core (s)", f"{alone:.2f}", bound, alone / sc.bound)
        row("floor sweep (s)", f"{floor.seconds:.2f}", bound, floor.seconds / sc.bound)
        row("reference sweep, gc.freeze() (s)", f"{ref.seconds:.2f}", bound, ref.seconds / sc.bound)
        on_floor = f"{floor.cpu_ms:.2f} floor"
        row("gpuid CPU per pod (ms)", f"{ours.cpu_ms:.2f}", on_floor, ours.cpu_ms / floor.cpu_ms, CPU_TARGET)
        row("floor CPU per pod (ms)", f"{floor.cpu_ms:.2f}", on_floor, 1.0)
        row("reference CPU per pod (ms)", f"{ref.cpu_ms:.2f}", on_floor, ref.cpu_ms / floor.cpu_ms)
        rss = peak_rss_mb(gpuid.pid)
        row("gpuid peak RSS (MiB)", f"{rss:.1f}", f"{MEMORY_BOUND_MB:.0f} MiB", rss / MEMORY_BOUND_MB)
        used = sc.pods * ours.cpu_ms / 1000 / ours.seconds
        print(
            f"  (gpuid used {used:.2f} of a core during its sweep; the simulated API server {sim_cpu:.1f} s)"
        )
        if first:
            await api_load(sim, sc)
            if args.profile:
                async with Recording(gpuid.pid) as rec:
                    profiled = await gpuid_sweep(sim, gpuid, sc, f"pr{sc.key}")
                report(rec.counts, profiled.cpu_ms)
            await memory_idle_latency(sim, gpuid, sc, args)
    finally:
        await gpuid.stop()
    return ours, floor


async def api_load(sim: SimProcess, sc: Scenario) -> None:
    counts = await sim.command("counts")
    total = sum(counts.values())
    other = sum(v for k, v in counts.items() if k != "exec")
    print(f"API load during the sweep: {counts}")
    row("requests per scanned pod", f"{total / sc.pods:.3f}", "1 exec + O(1)", total / sc.pods)
    row("non-exec requests (whole sweep)", f"{other}", "O(1)", 0.0)


async def memory_idle_latency(
    sim: SimProcess, gpuid: GpuidProcess, sc: Scenario, a: argparse.Namespace
) -> None:
    more = a.fleet - gpuid.records // GPUS
    if more > 0:  # watched, not ready: memory of a fleet without another sweep's CPU
        await sim.command(f"pods sweep-{sc.key} {more} {CAPTURE} 0 0 more")
        await asyncio.sleep(3)
    rss = peak_rss_mb(gpuid.pid)
    print(f"memory: {a.fleet} pods watched ({gpuid.records // GPUS} of them scanned), {sc.workers} workers")
    row("gpuid peak RSS (MiB)", f"{rss:.1f}", f"{MEMORY_BOUND_MB:.0f} MiB", rss / MEMORY_BOUND_MB)
    await asyncio.sleep(2)
    idle0 = cpu_seconds(gpuid.pid)
    await asyncio.sleep(a.idle)
    idle = (cpu_seconds(gpuid.pid) - idle0) * 60 / a.idle
    print(f"idle: {a.fleet} unchanged pods watched for {a.idle:.0f} s")
    row("gpuid CPU (s per minute)", f"{idle:.3f}", f"{IDLE_BOUND} s/min", idle / IDLE_BOUND)
    await latency(sim, gpuid, sc, a.latency_pods)


async def latency(sim: SimProcess, gpuid: GpuidProcess, sc: Scenario, pods: int) -> None:
    await sim.command(f"pods sweep-{sc.key} {pods} {CAPTURE} {sc.exec_seconds} 0 lat")
    gpuid.watch_prefix = b"dp-lat-"
    await asyncio.sleep(1)
    ready_at = {}
    for i in range(pods):
        name = f"dp-lat-{i:05d}"
        ready_at[name] = (await sim.command(f"ready sweep-{sc.key} {name}"))["at"]
        await asyncio.sleep(0.05)
    await gpuid.until(lambda: len(gpuid.first_seen) >= pods, timeout=60)
    lat = sorted((gpuid.first_seen[p] - t) * 1000 for p, t in ready_at.items())
    p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    bound = sc.exec_seconds * 1000 + 50
    print(f"latency: {pods} pods made ready 50 ms apart, exec {sc.exec_seconds * 1000:.0f} ms")
    row("Ready -> record p50 (ms)", f"{p50:.0f}", f"{bound:.0f} ms", p50 / bound)
    row("Ready -> record p99 (ms)", f"{p99:.0f}", f"{bound:.0f} ms", p99 / bound)


async def run(args: argparse.Namespace) -> None:
    gc.freeze()  # the driver's imports (kubernetes_asyncio among them) are not the floor's garbage
    scenarios = [
        Scenario("a", 0.1, args.workers, args.pods),
        Scenario("b", 1.0, args.slow_workers, args.pods),
    ]
    sim = SimProcess(tls=args.tls)
    await sim.start()
    print(f"simulated API server over {'HTTPS (self-signed CA)' if args.tls else 'plain HTTP'}", end="; ")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), f"on {os.cpu_count()} CPUs")
    results = []
    try:
        for i, sc in enumerate(scenarios):
            results.append((sc, *await scenario(sim, sc, args, first=i == 0)))
    finally:
        await sim.stop()
    print("targets (load average now: {:.2f} {:.2f} {:.2f}):".format(*os.getloadavg()))
    for sc, ours, floor in results:
        ratio = ours.seconds / sc.bound
        row(
            f"sweep vs latency bound, {sc.exec_seconds * 1000:.0f} ms",
            f"{ours.seconds:.2f}",
            "",
            ratio,
            SWEEP_TARGET,
        )
        ratio = ours.cpu_ms / floor.cpu_ms
        row(
            f"CPU per pod vs floor, {sc.exec_seconds * 1000:.0f} ms",
            f"{ours.cpu_ms:.2f}",
            "",
            ratio,
            CPU_TARGET,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=2000, help="pods in each sweep (default 2000)")
    parser.add_argument("--workers", type=int, default=64, help="WORKERS of the 100 ms scenario")
    parser.add_argument("--slow-workers", type=int, default=256, help="WORKERS of the 1 s scenario")
    parser.add_argument("--fleet", type=int, default=10000, help="pods watched for memory/idle")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle measurement")
    parser.add_argument("--latency-pods", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="CPU split of one more sweep (py-spy)")
    parser.add_argument("--no-tls", dest="tls", action="store_false", help="plain HTTP (hides TLS cost)")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
