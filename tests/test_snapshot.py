"""``gpuid snapshot`` against the simulated cluster: every GPU once, failures named, the right exit code."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from typing import Any

from aiohttp import web

from gpuid.config import load_settings
from gpuid.records import FIELD_NAMES
from gpuid.sim import bundled_capture
from gpuid.snapshot import run_snapshot
from tests.support.app import A100_MIG, GB200, H100, Sim, add_gpu_node
from tests.support.services import serving

CAPTURES = {"h100": H100, "gb200": GB200, "mig": A100_MIG}
GPUS = sum(len(bundled_capture(c).gpu_uuids()) for c in CAPTURES.values())


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def cluster(sim: Sim) -> None:
    for node, capture in CAPTURES.items():
        add_gpu_node(sim, node, capture)


async def snapshot(
    sim: Sim, *, out: io.StringIO | None = None, err: io.StringIO | None = None, **env: str
) -> Any:
    settings = load_settings(
        {"CLUSTER_NAME": "snap", "KUBECONFIG": str(sim.kubeconfig), "TIMEOUT": "5s", **env}
    )
    out, err = out or io.StringIO(), err or io.StringIO()
    output = env.pop("OUTPUT", "")
    code = await run_snapshot(settings, output=output, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_every_gpu_is_printed_once_as_json_lines_and_the_exit_code_is_0(sim: Sim) -> None:
    cluster(sim)
    code, out, err = await snapshot(sim)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert len(records) == GPUS == 13
    assert {r["event"] for r in records} == {"gpu_reading"}
    assert sorted(r["gpu_uuid"] for r in records) == sorted(
        u for c in CAPTURES.values() for u in bundled_capture(c).gpu_uuids()
    )
    assert {r["node"] for r in records} == set(CAPTURES)
    assert {r["cluster"] for r in records} == {"snap"}
    assert all(r["machine"].startswith("i-0") for r in records)
    assert err == "3 nodes, 13 GPUs from 3 ready pods; failed: none\n"
    assert sim.cluster.request_counts["exec"] == 4  # one nvidia-smi -q -x each, and -L on the MIG node


async def test_a_failing_pod_is_named_and_makes_the_exit_code_1(sim: Sim) -> None:
    cluster(sim)
    add_gpu_node(sim, "bad", H100)
    sim.cluster.set_exec("dp-bad", exit_code=3, stderr=b"Failed to initialize NVML")
    add_gpu_node(sim, "slow", H100)
    sim.cluster.set_exec("dp-slow", hang=True)
    add_gpu_node(sim, "starting", H100, ready=False)
    code, out, err = await snapshot(sim, TIMEOUT="1s")
    assert code == 1
    assert len(out.splitlines()) == 13  # the rest is still printed
    lines = err.splitlines()
    assert lines[0] == "3 nodes, 13 GPUs from 5 ready pods; failed: exec_error: 1, timeout: 1"
    assert lines[1].startswith(
        "  failed gpu-operator/dp-bad on node bad: exec_error: nvidia-smi failed (exit code 3)"
    )
    assert lines[2].startswith("  failed gpu-operator/dp-slow on node slow: timeout: ")
    assert lines[3] == "  not ready, not scanned: gpu-operator/dp-starting on node starting"


async def test_a_selector_that_matches_nothing_says_so(sim: Sim) -> None:
    cluster(sim)
    code, out, err = await snapshot(sim, LABEL_SELECTOR="app=nothing-here")
    assert (code, out) == (0, "")
    assert err.splitlines() == [
        "0 nodes, 0 GPUs from 0 ready pods; failed: none",
        "  no pod matches namespace gpu-operator, selector 'app=nothing-here': check NAMESPACE and"
        " LABEL_SELECTOR (or SCAN_SOURCE)",
    ]


async def test_a_table_on_a_terminal_with_progress_and_csv_on_request(sim: Sim) -> None:
    add_gpu_node(sim, "h100", H100)
    err = Terminal()
    code, out, _ = await snapshot(sim, out=Terminal(), err=err)
    table = out.splitlines()
    assert code == 0
    assert table[0].split() == ["NODE", "GPU", "UUID", "SERIAL", "CHASSIS", "MODULE", "PCI", "PRODUCT"]
    assert table[1].split()[:4] == ["h100", "0", bundled_capture(H100).gpu_uuids()[0], "1652923034028"]
    assert len(table) == 9
    assert "\rscanned 1/1 pods, 0 failed" in err.getvalue()
    code, out, _ = await snapshot(sim, OUTPUT="csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == FIELD_NAMES
    assert len(rows) == 9


async def test_export_hands_the_records_to_the_exporters(sim: Sim) -> None:
    add_gpu_node(sim, "h100", H100)
    bodies: list[list[dict[str, Any]]] = []

    async def ingest(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/ingest", ingest)
    async with serving(app) as url:
        settings = load_settings(
            {
                "CLUSTER_NAME": "snap",
                "KUBECONFIG": str(sim.kubeconfig),
                "EXPORTER_TYPE": "http",
                "HTTP_ENDPOINT": f"{url}/ingest",
            }
        )
        out = io.StringIO()
        assert await run_snapshot(settings, export=True, out=out, err=io.StringIO()) == 0
    assert sorted(r["gpu_uuid"] for body in bodies for r in body) == sorted(bundled_capture(H100).gpu_uuids())


async def run_cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuid",
        *argv,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_takes_the_kubeconfig_after_the_subcommand(sim: Sim) -> None:
    cluster(sim)
    code, out, err = await run_cli("snapshot", "--kubeconfig", str(sim.kubeconfig), env={"CLUSTER_NAME": ""})
    assert code == 0, err
    assert len(out.splitlines()) == 13
    assert err.endswith("3 nodes, 13 GPUs from 3 ready pods; failed: none\n")


async def test_the_demo_takes_a_snapshot_of_its_simulated_cluster() -> None:
    code, out, err = await run_cli("demo", "--snapshot")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 13
    assert {r["node"] for r in records} == {"gpu-node-1", "gpu-node-2", "gpu-node-3"}
