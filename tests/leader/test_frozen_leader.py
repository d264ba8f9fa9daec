"""A leader frozen mid-scan past its Lease (SIGSTOP, a stalled VM) publishes nothing when it wakes up.

The frozen leader is a real ``python -m gpuid`` process stopped with SIGSTOP
while its exec is in flight; the simulated kubelet answers during the freeze,
so when the process resumes the scan's output is already waiting in its
socket and the scan can finish before the lease loop has looked at the clock.
The successor is an in-process replica against the same simulated cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

from gpuid.sim import bundled_capture
from tests.leader.test_leader import _holder
from tests.support.app import ELECTION, Sim, eventually, running_app

ONE_GPU = "one-gpu"


def add_one_gpu_node(sim: Sim, node: str) -> str:
    """A node whose device-plugin pod reports one GPU: its whole answer fits in a socket buffer."""
    xml = bundled_capture("gpuid-h100-sxm-x8").xml
    first_end = xml.index(b"</gpu>") + len(b"</gpu>")
    sim.cluster.add_capture(ONE_GPU, xml[:first_end] + xml[xml.rindex(b"</gpu>") + len(b"</gpu>") :])
    sim.cluster.add_node(node, capture=ONE_GPU)
    sim.cluster.add_pod(f"dp-{node}", node=node)
    return f"dp-{node}"


async def test_a_leader_frozen_mid_scan_discards_the_scan_when_it_wakes_up(sim: Sim) -> None:
    pod = add_one_gpu_node(sim, "n1")
    sim.cluster.set_exec(pod, delay=1.0)
    env = {
        **os.environ,
        **ELECTION,
        "CLUSTER_NAME": "frozen",
        "KUBECONFIG": str(sim.kubeconfig),
        "SERVER_PORT": "0",
        "POD_NAME": "a",
        "LOG_FORMAT": "json",
        "EXPORT_FLUSH_INTERVAL": "0",
    }
    frozen = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpuid", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await eventually(lambda: _holder(sim) == "a", timeout=30, what="a leads")
        await eventually(lambda: sim.server.open_exec_sessions == 1, timeout=30, what="a's scan in flight")
        frozen.send_signal(signal.SIGSTOP)
        async with running_app(sim, POD_NAME="b", **ELECTION) as b:
            # The kubelet answers a's exec during the freeze; b waits out a's Lease and takes over.
            await eventually(lambda: b.sample("gpuid_leader") == 1, timeout=20, what="b leads")
            await eventually(lambda: len(b.memory.records) == 1, timeout=20, what="b's own scan")
            frozen.send_signal(signal.SIGCONT)
            await eventually(lambda: b.sample("gpuid_leader") == 1, what="b still leads")
            await asyncio.sleep(2.0)  # a wakes up, finds its term over, and stands by
            assert b.sample("gpuid_leader") == 1
    finally:
        if frozen.returncode is None:
            frozen.send_signal(signal.SIGCONT)
            frozen.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(frozen.communicate(), 20)
    assert frozen.returncode == 0
    assert out == b""  # not one record from the term a lost while frozen
    logs: list[dict[str, Any]] = [json.loads(line) for line in err.decode().splitlines()]
    events = [line["event"] for line in logs]
    assert "lost the leader lease; stopped scanning" in events
    discarded = [line for line in logs if line["event"].startswith("scan finished after the leader lease")]
    assert [(line["pod"], line["result"]) for line in discarded] == [(f"gpu-operator/{pod}", "success")]
    assert not any(line["event"] == "pod scanned" for line in logs)
