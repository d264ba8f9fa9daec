"""A live stack for the observability tests: simulated cluster, a ``gpuid`` process, a real Prometheus.

The simulated API server runs in its own thread and event loop, so several
synchronous tests can share one stack (started once per module) and still
change the cluster while gpuid watches it. gpuid and Prometheus are real
processes on 127.0.0.1; a process that cannot start fails the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gpuid.sim import AdmissionHook, SimApiServer, SimCluster

from .manifests import tool

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # 127.0.0.1 only
        return str(resp.read().decode())


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:  # not listening yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


class SimThread:
    """``SimCluster`` + ``SimApiServer`` served from a background thread; ``run`` runs code on its loop."""

    def __init__(self, kubeconfig: Path, admission: AdmissionHook | None = None) -> None:
        self.cluster = SimCluster()
        self.server = SimApiServer(self.cluster, bookmark_interval=0.5, admission=admission)
        self.kubeconfig = kubeconfig
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve()), name="sim-apiserver", daemon=True
        )

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with self.server as server:
            server.write_kubeconfig(self.kubeconfig)
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> SimThread:
        self._thread.start()
        if not self._ready.wait(10):
            pytest.fail("the simulated API server did not start")
        return self

    def run(self, work: Callable[[], Awaitable[T]]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(work(), self._loop).result(30)

    def change(self, mutate: Callable[[SimCluster], object]) -> None:
        """Change the cluster from the server's own loop (the watch streams run there)."""

        async def apply() -> None:
            mutate(self.cluster)

        self.run(apply)

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class Process:
    """A child process whose output goes to a log file that failures quote."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def started(self, answers: Callable[[], object], timeout: float) -> None:
        """Wait for ``answers`` to succeed; a process that dies or never answers is stopped (test fails)."""
        try:
            wait_until(lambda: self.check_alive() or answers(), timeout, f"{self.name} to answer")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_gpuid(env: dict[str, str], log: Path) -> Process:
    gpuid = Process("gpuid", [sys.executable, "-m", "gpuid"], log, env={**os.environ, **env})
    port = env["SERVER_PORT"]
    gpuid.started(lambda: http_get(f"http://127.0.0.1:{port}/healthz"), 20)
    return gpuid


class Prometheus(Process):
    """A real Prometheus scraping ``target`` (job gpuid) and ``jobs`` every second, ``rule_files`` loaded."""

    def __init__(
        self, workdir: Path, target: str, rule_files: list[Path], jobs: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        targets = {"gpuid": target, **(jobs or {})}
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [where]}]} for job, where in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        argv = [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        super().__init__("prometheus", argv, workdir / "prometheus.log")
        self.started(lambda: http_get(f"{self.url}/-/ready"), 30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        body = json.loads(http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return list(data["result"])
