"""The simulated API server in a process of its own, driven over stdin/stdout.

Fleet benchmarks measure gpuid, not the simulator: with both in one event
loop every exec the sim serves (WebSocket upgrade, 89 KB of frames) would be
charged to gpuid, and on a 2-core machine the two would fight for one core.
So ``python -m bench.simproc [--tls]`` runs ``SimCluster`` +
``SimApiServer`` alone (over HTTPS with ``--tls``, as real API servers
speak), prints ``{"url", "kubeconfig", "pid"}`` as its first stdout line, then answers
one JSON line per command line:

- ``pods <namespace> <count> <capture> <delay> <ready 0|1> <prefix>``: add
  nodes ``<prefix>-<i>`` with one device-plugin pod each, all in one go;
  ``{"added", "at"}`` (``at`` is ``time.time()`` after the last one);
- ``ready <namespace> <pod>``: make a pod ready; ``{"at"}``;
- ``counts``: ``request_counts``; ``reset``: zero them;
- ``quit``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpuid.sim import SimApiServer, SimCluster


def _pods(cluster: SimCluster, args: list[str]) -> dict[str, Any]:
    namespace, count, capture, delay, ready, prefix = args
    for i in range(int(count)):
        node = f"{prefix}-{i:05d}"
        pod = f"dp-{node}"
        cluster.add_node(node, capture=capture)
        cluster.add_pod(pod, node=node, namespace=namespace, ready=ready == "1")
        if float(delay):
            cluster.set_exec(pod, namespace=namespace, delay=float(delay))
    return {"added": int(count), "at": time.time()}


def answer(cluster: SimCluster, line: str) -> dict[str, Any] | None:
    command, *args = line.split()
    if command == "pods":
        return _pods(cluster, args)
    if command == "ready":
        cluster.set_ready(args[1], True, namespace=args[0])
        return {"at": time.time()}
    if command == "counts":
        return dict(cluster.request_counts)
    if command == "reset":
        cluster.request_counts.clear()
        return {}
    if command == "quit":
        return None
    return {"error": f"unknown command {command!r}"}


async def serve() -> None:
    cluster = SimCluster(max_events=200_000)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with tempfile.TemporaryDirectory(prefix="gpuid-bench-") as tmp:
        async with SimApiServer(cluster, bookmark_interval=1.0, tls="--tls" in sys.argv[1:]) as server:
            kubeconfig = server.write_kubeconfig(Path(tmp) / "kubeconfig")
            hello = {"url": server.url, "kubeconfig": str(kubeconfig), "pid": os.getpid()}
            print(json.dumps(hello), flush=True)
            while line := (await reader.readline()).decode():
                reply = answer(cluster, line)
                if reply is None:
                    break
                print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    asyncio.run(serve())
