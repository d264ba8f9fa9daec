"""How fast does a 50 MB bug report come out of a pod, and what does it cost in memory?

Run from the repo root: ``python -m bench.bugreport [--mb 50] [--no-s3]``.
The simulated API server runs in this process (it streams the report from
disk a 32 KiB frame at a time), gpuid's collector downloads it over the
WebSocket exec stream into a local directory, and then into S3 (moto's
server, started as a separate process so its in-memory objects do not
count). Prints MB/s of the download and of the whole collection, and the
peak RSS growth of this process during each collection (target: < 64 MB,
i.e. the report is never held in memory).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpuid.bugreport.collect import Target, collect_report, report_name
from gpuid.bugreport.sinks import Destination, LocalDirectory, ReportWriter
from gpuid.exporters.s3client import S3Settings
from gpuid.kube.client import connect
from gpuid.kube.objects import slim_pod
from gpuid.log import configure_logging
from gpuid.sim import SimApiServer, SimCluster
from tests.support.services import free_port

TARGET_MB = 64
MB = 1024 * 1024


def rss_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, flags=re.M)
    return int(match.group(1)) if match else 0


def reset_peak() -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


class Timed:
    """Wraps a destination to time the download: first chunk to commit."""

    def __init__(self, inner: Destination) -> None:
        self.inner = inner
        self.name = inner.name
        self.first: float | None = None
        self.done: float | None = None

    async def open(self, node: str, file_name: str, *, size: int, sha256: str) -> ReportWriter:
        writer = await self.inner.open(node, file_name, size=size, sha256=sha256)
        outer = self

        class Writer:
            location = writer.location

            async def write(self, chunk: bytes) -> None:
                outer.first = outer.first or time.perf_counter()
                await writer.write(chunk)

            async def commit(self) -> None:
                await writer.commit()
                outer.done = time.perf_counter()

            async def abort(self) -> None:
                await writer.abort()

        return Writer()


async def measure(label: str, kube: Any, target: Target, destination: Destination, size_mb: int) -> None:
    timed = Timed(destination)
    reset_peak()
    before = rss_kib("VmRSS")
    started = time.perf_counter()
    collected = await collect_report(
        kube.core_ws,
        target,
        name=report_name(target.node, label, datetime.now(UTC)),
        timeout=600,
        destinations=[timed],
    )
    total = time.perf_counter() - started
    growth_mb = (rss_kib("VmHWM") - before) / 1024
    assert timed.first is not None
    assert timed.done is not None
    download = timed.done - timed.first
    mb = collected.size / MB
    verdict = "within" if growth_mb < TARGET_MB else "OVER"
    print(
        f"{label:<6} {mb:6.1f} MB  download {mb / download:7.1f} MB/s ({download:5.2f} s)  "
        f"whole collection {mb / total:7.1f} MB/s ({total:5.2f} s)  "
        f"peak RSS growth {growth_mb:5.1f} MB ({verdict} the {TARGET_MB} MB target)",
        flush=True,
    )


@contextmanager
def moto_process() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def s3_destination(endpoint: str) -> Destination:
    import aioboto3

    from gpuid.bugreport.s3 import S3Destination

    async with aioboto3.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1") as s3:
        await s3.create_bucket(Bucket="bench")
    settings = S3Settings(bucket="bench", endpoint_url=endpoint, force_path_style=True, region="us-east-1")
    return S3Destination(settings, "bench")


async def run(size_mb: int, with_s3: bool) -> None:
    cluster = SimCluster()
    cluster.add_node("gpu-node-1")
    cluster.add_pod("driver", node="gpu-node-1", containers=("nvidia-driver-ctr",))
    async with SimApiServer(cluster) as server:
        with tempfile.TemporaryDirectory(prefix="gpuid-bench-") as tmp:
            kube = await connect(str(server.write_kubeconfig(Path(tmp) / "kubeconfig")))
            try:
                target = Target("gpu-node-1", slim_pod(cluster.pod("driver")), "nvidia-driver-ctr")
                local = LocalDirectory(Path(tmp) / "reports", keep=1)
                cluster.pod_files.set_bug_report("driver", size=MB)
                warmup = report_name(target.node, "warmup", datetime.now(UTC))
                await collect_report(kube.core_ws, target, name=warmup, timeout=60, destinations=[local])
                cluster.pod_files.set_bug_report("driver", size=size_mb * MB)
                await measure("local", kube, target, local, size_mb)
                if with_s3:
                    with moto_process() as endpoint:
                        await measure("s3", kube, target, await s3_destination(endpoint), size_mb)
            finally:
                await kube.close()
    cluster.pod_files.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bugreport")
    parser.add_argument("--mb", type=int, default=50, help="report size in MB (default 50)")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) destination")
    args = parser.parse_args(argv if argv is not None else [])
    configure_logging("warning", "json")
    logging.getLogger("botocore").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    print(f"{args.mb} MB nvidia-bug-report.log.gz from a simulated driver pod, streamed over WebSocket exec")
    asyncio.run(run(args.mb, not args.no_s3))


if __name__ == "__main__":
    main(sys.argv[1:])
