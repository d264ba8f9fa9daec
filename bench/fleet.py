"""Fleet-scale figures: sweep time, API load, memory, latency and idle cost, each next to its bound.

Run from the repo root: ``python -m bench.fleet [--pods 5000] [--fleet 10000]``.
Three processes: the simulated API server (``bench.simproc``), gpuid
(``python -m gpuid``, stdout exporter, logs at info to /dev/null) and this
driver, which reads gpuid's records off its stdout and runs the reference
client. Every exec answers after 100 ms with the 89 KB 8 x H100 capture.

1. sweep: ``--pods`` ready pods appear at once; time from the moment the sim
   has added the last one until gpuid has printed every GPU's record, next to
   the latency bound ``pods x 0.1 s / WORKERS`` and the reference client
   (``bench.reference``) run on the same number of pods in the same sim;
2. API load: requests the sim served during the sweep, per scanned pod;
3. memory: gpuid's peak RSS once ``--fleet`` pods are watched and scanned;
4. idle: gpuid's CPU seconds per minute while those pods stay unchanged;
5. latency: pods made ready one at a time (not saturated): Ready → record.

Figures on a shared machine are noisy; ratios are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.procs import GpuidProcess, SimProcess, cpu_seconds, peak_rss_mb
from bench.reference import reference_sweep

CAPTURE = "gpuid-h100-sxm-x8"
GPUS = 8
EXEC = 0.1
NS = "gpu-operator"
MEMORY_BOUND_MB = 150.0
IDLE_BOUND = 0.6  # CPU s/min: 1 % of one core


def row(name: str, figure: str, bound: str, ratio: float) -> None:
    print(f"  {name:<44} {figure:>12}  {bound:>14}  {ratio:6.2f}x", flush=True)


async def run(args: argparse.Namespace) -> None:
    sim = SimProcess()
    await sim.start()
    gpuid: GpuidProcess | None = None
    try:
        bound = args.pods * EXEC / args.workers
        print(
            f"sweep: {args.pods} pods x {GPUS} GPUs, exec {EXEC * 1000:.0f} ms, WORKERS={args.workers},"
            f" EXPORT_FLUSH_INTERVAL={args.flush}"
        )
        await sim.command(f"pods ref {args.pods} {CAPTURE} {EXEC} 1 ref")
        ref_cpu = time.process_time()
        ref_seconds, uuids = await reference_sweep(
            sim.kubeconfig, "ref", [f"dp-ref-{i:05d}" for i in range(args.pods)], args.workers
        )
        ref_cpu = time.process_time() - ref_cpu
        assert uuids == args.pods * GPUS, uuids
        gpuid = GpuidProcess(
            sim.kubeconfig, NAMESPACE=NS, WORKERS=str(args.workers), EXPORT_FLUSH_INTERVAL=args.flush
        )
        await gpuid.start()
        await sim.command("reset")
        cpu0, sim_cpu0 = cpu_seconds(gpuid.pid), cpu_seconds(sim.pid)
        added = await sim.command(f"pods {NS} {args.pods} {CAPTURE} {EXEC} 1 fleet")
        await gpuid.until(lambda: gpuid.records >= args.pods * GPUS)
        sweep = time.time() - added["at"]
        gpuid_cpu, sim_cpu = cpu_seconds(gpuid.pid) - cpu0, cpu_seconds(sim.pid) - sim_cpu0
        row("gpuid sweep (s)", f"{sweep:.2f}", f"{bound:.2f} latency", sweep / bound)
        row("reference client sweep (s)", f"{ref_seconds:.2f}", f"{bound:.2f} latency", ref_seconds / bound)
        row("gpuid vs reference client (s)", f"{sweep:.2f}", f"{ref_seconds:.2f} ref", sweep / ref_seconds)
        per_pod = gpuid_cpu * 1000 / args.pods
        ref_per_pod = ref_cpu * 1000 / args.pods
        row("gpuid CPU per pod (ms)", f"{per_pod:.2f}", f"{ref_per_pod:.2f} ref", per_pod / ref_per_pod)
        print(f"  (sim server CPU during the gpuid sweep: {sim_cpu:.1f} s)")

        counts = await sim.command("counts")
        total = sum(counts.values())
        other = {k: v for k, v in counts.items() if k != "exec"}
        print(f"API load during the sweep: {counts}")
        row("requests per scanned pod", f"{total / args.pods:.3f}", "1 exec + O(1)", total / args.pods)
        row("non-exec requests (whole sweep)", f"{sum(other.values())}", "O(1)", 0.0)

        more = args.fleet - args.pods
        if more > 0:
            await sim.command(f"pods {NS} {more} {CAPTURE} 0 1 more")
            await gpuid.until(lambda: gpuid.records >= args.fleet * GPUS)
        rss = peak_rss_mb(gpuid.pid)
        print(f"memory: {args.fleet} pods watched and scanned")
        row("gpuid peak RSS (MiB)", f"{rss:.1f}", f"{MEMORY_BOUND_MB:.0f} MiB", rss / MEMORY_BOUND_MB)

        await asyncio.sleep(3)
        idle0 = cpu_seconds(gpuid.pid)
        await asyncio.sleep(args.idle)
        idle = (cpu_seconds(gpuid.pid) - idle0) * 60 / args.idle
        print(f"idle: {args.fleet} unchanged pods watched for {args.idle:.0f} s")
        row("gpuid CPU (s per minute)", f"{idle:.3f}", f"{IDLE_BOUND} s/min", idle / IDLE_BOUND)

        await latency(sim, gpuid, args.latency_pods)
    finally:
        if gpuid is not None:
            await gpuid.stop()
        await sim.stop()


async def latency(sim: SimProcess, gpuid: GpuidProcess, pods: int) -> None:
    await sim.command(f"pods {NS} {pods} {CAPTURE} {EXEC} 0 lat")
    gpuid.watch_prefix = b"dp-lat-"
    await asyncio.sleep(1)
    ready_at = {}
    for i in range(pods):
        name = f"dp-lat-{i:05d}"
        ready_at[name] = (await sim.command(f"ready {NS} {name}"))["at"]
        await asyncio.sleep(0.05)
    await gpuid.until(lambda: len(gpuid.first_seen) >= pods, timeout=60)
    lat = sorted((gpuid.first_seen[p] - t) * 1000 for p, t in ready_at.items())
    p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    bound = EXEC * 1000 + 50
    print(f"latency: {pods} pods made ready 50 ms apart, exec {EXEC * 1000:.0f} ms")
    row("Ready -> record p50 (ms)", f"{p50:.0f}", f"{bound:.0f} ms", p50 / bound)
    row("Ready -> record p99 (ms)", f"{p99:.0f}", f"{bound:.0f} ms", p99 / bound)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=5000, help="pods in the sweep (default 5000)")
    parser.add_argument("--fleet", type=int, default=10000, help="pods watched for memory/idle")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    parser.add_argument("--latency-pods", type=int, default=100)
    parser.add_argument(
        "--flush", default="0s", help="gpuid's EXPORT_FLUSH_INTERVAL (default 0s, gpuid's own)"
    )
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
