"""The ``gpuid`` process itself, pointed at the simulated cluster by KUBECONFIG, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys

import aiohttp

from gpuid.sim import bundled_capture
from tests.support.app import GB200, H100, Sim, add_gpu_node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


def metric(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_prefix} not in /metrics")


async def test_gpuid_process_exports_every_gpu_once_and_stops_cleanly_on_sigterm(sim: Sim) -> None:
    add_gpu_node(sim, "n1", H100)
    add_gpu_node(sim, "n2", GB200)
    add_gpu_node(sim, "broken", GB200)
    sim.cluster.set_exec("dp-broken", exit_code=15, stderr=b"Unable to determine the device handle")
    port = free_port()
    env = {
        **os.environ,
        "CLUSTER_NAME": "e2e",
        "KUBECONFIG": str(sim.kubeconfig),
        "SERVER_PORT": str(port),
        "LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpuid", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        records: list[dict[str, object]] = []
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while len(records) < 12:
                records.append(json.loads(await proc.stdout.readline()))
            while True:
                _, text = await scrape(port, "/metrics")
                if metric(text, 'gpuid_scans_total{result="exec_error"}') >= 1:
                    break
                await asyncio.sleep(0.1)
        assert metric(text, 'gpuid_scans_total{result="success"}') == 2
        assert metric(text, 'gpuid_export_success_total{exporter="stdout"}') == 12
        assert metric(text, "gpuid_gpus_observed") == 12
        assert (await scrape(port, "/healthz"))[0] == 200
        assert (await scrape(port, "/readyz"))[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    assert out == b""  # nothing more than the 12 records, all read above
    assert all(r["event"] == "gpu_reading" for r in records)
    by_pod: dict[object, list[object]] = {}
    for r in records:
        by_pod.setdefault(r["source"], []).append(r["gpu_uuid"])
    assert sorted(by_pod) == ["gpu-operator/dp-n1", "gpu-operator/dp-n2"]
    assert sorted(by_pod["gpu-operator/dp-n1"]) == sorted(bundled_capture(H100).gpu_uuids())
    assert len(set(by_pod["gpu-operator/dp-n2"])) == 4
    logs = [json.loads(line) for line in err.decode().splitlines()]  # every stderr line is JSON
    failures = [entry for entry in logs if entry.get("event") == "pod scan failed"]
    assert failures
    assert failures[0]["node"] == "broken"
    assert failures[0]["pod"] == "gpu-operator/dp-broken"
    assert "exit code 15" in failures[0]["error"]
    assert all({"timestamp", "level", "event"} <= entry.keys() for entry in logs)
    assert logs[-1]["event"] == "gpuid stopped"


async def test_demo_prints_one_valid_record_per_simulated_gpu() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuid",
        "demo",
        "--nodes",
        "3",
        env={**os.environ, "LOG_FORMAT": "json"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert len(records) == 8 + 4 + 1
    assert len({(r["source"], r["gpu_uuid"]) for r in records}) == 13
    assert {r["cluster"] for r in records} == {"demo"}
