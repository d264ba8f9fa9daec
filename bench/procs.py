"""The processes a fleet benchmark drives: the simulated API server and gpuid itself.

Both run as real child processes so their CPU time and peak memory are
their own (read from ``/proc``), and so gpuid is measured exactly as it is
deployed: ``python -m gpuid`` with the stdout exporter, records read from
its stdout by the benchmark as they arrive.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.support.services import free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """``VmHWM``: the most resident memory the process has had, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


class SimProcess:
    """``python -m bench.simproc``: one command line in, one JSON line out."""

    def __init__(self, *, tls: bool = True) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.kubeconfig = ""
        self.pid = 0
        self.tls = tls

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.simproc", *(["--tls"] if self.tls else []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
        )  # fmt: skip
        hello = await self._read()
        self.kubeconfig, self.pid = hello["kubeconfig"], hello["pid"]

    async def _read(self) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        reply: dict[str, Any] = json.loads(await self.proc.stdout.readline())
        return reply

    async def command(self, line: str) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._read()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            await self.proc.stdin.drain()
            await self.proc.wait()


class GpuidProcess:
    """``python -m gpuid`` with records on a pipe; counts them and notes when each pod's first arrives."""

    def __init__(self, kubeconfig: str, **env: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "CLUSTER_NAME": "bench",
            "KUBECONFIG": kubeconfig,
            "EXPORTER_TYPE": "stdout",
            "SERVER_PORT": str(self.port),
            "TIMEOUT": "120s",
            **env,
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.records = 0
        self.first_seen: dict[str, float] = {}  # pod name -> time.time() of its first record
        self.watch_prefix = b"\x00"  # only pods whose name contains this are timed
        self._reader: asyncio.Task[None] | None = None
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gpuid", env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, limit=1 << 20,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read(), name="gpuid-stdout")
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.records += 1
            if self.watch_prefix in line:
                pod = json.loads(line)["source"].split("/", 1)[1]
                self.first_seen.setdefault(pod, time.time())
            for predicate, fut in self._waiters:
                if not fut.done() and predicate():
                    fut.set_result(None)

    async def until(self, predicate: Callable[[], bool], timeout: float = 600) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        if predicate():
            fut.set_result(None)
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.remove((predicate, fut))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait([self._reader])
