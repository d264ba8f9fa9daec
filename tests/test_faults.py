"""Fault tolerance: sweeps that ride through everything an API server and kubelets do wrong.

Each test runs the real App against the simulated API server while injecting
the failure it names, and checks the outcome that matters: every pod is
scanned exactly once (one exec, one record), failing pods alone are retried,
and nothing crashes. Pods answer with a one-GPU capture (cut from the H100
capture) so a few hundred of them sweep in seconds on a busy machine.
(A leader killed mid-sweep is in ``test_leader.py``.)
"""

from __future__ import annotations

import asyncio
from collections import Counter

from gpuid.sim import bundled_capture
from tests.support.app import Running, Sim, eventually, running_app

ONE_GPU = "one-gpu"
POD_PATHS = "/namespaces/gpu-operator/pods?"  # pod list and watch requests (not exec)


def add_one_gpu_pods(sim: Sim, start: int, count: int) -> list[str]:
    try:
        sim.cluster.capture(ONE_GPU)
    except KeyError:
        xml = bundled_capture("gpuid-h100-sxm-x8").xml
        first_end = xml.index(b"</gpu>") + len(b"</gpu>")
        sim.cluster.add_capture(ONE_GPU, xml[:first_end] + xml[xml.rindex(b"</gpu>") + len(b"</gpu>") :])
    names = []
    for i in range(start, start + count):
        sim.cluster.add_node(f"n{i:04d}", capture=ONE_GPU)
        sim.cluster.add_pod(f"dp-{i:04d}", node=f"n{i:04d}")
        names.append(f"dp-{i:04d}")
    return names


def records_per_pod(run: Running) -> Counter[str]:
    return Counter(r.source.split("/", 1)[1] for r in run.memory.records)


async def test_sweep_survives_dropped_watches_500s_and_429s(sim: Sim) -> None:
    pods = add_one_gpu_pods(sim, 0, 100)
    async with running_app(sim, WORKERS="16") as run:
        for round_ in range(1, 5):
            sim.cluster.fail_requests(1, 500, path_contains=POD_PATHS)
            sim.cluster.fail_requests(1, 429, path_contains=POD_PATHS)
            sim.cluster.drop_watches(reset=round_ % 2 == 1)
            pods.extend(add_one_gpu_pods(sim, round_ * 100, 100))
            await eventually(lambda: not sim.cluster.pending_failures, what="the failures to be met")
            await eventually(lambda: sim.server.open_watches == 2, what="both watches back")
        await eventually(lambda: len(run.memory.records) >= 500, timeout=45, what="500 records")
        await asyncio.sleep(0.3)  # time for a duplicate to show up, were there one
        assert records_per_pod(run) == Counter(dict.fromkeys(pods, 1))
        assert sim.cluster.request_counts["exec"] == 500
        assert run.sample("gpuid_watch_restarts_total", reason="error") >= 4


async def test_repeated_410s_relist_without_missing_or_repeating_a_pod(sim: Sim) -> None:
    pods = add_one_gpu_pods(sim, 0, 40)
    async with running_app(sim, WORKERS="16") as run:
        await eventually(lambda: len(run.memory.records) == 40)
        for round_ in range(1, 5):
            # Keep the watch away while pods change and history is compacted: it resumes from a gone rv.
            sim.cluster.fail_requests(1, 500, path_contains=POD_PATHS)
            sim.cluster.drop_watches()
            await asyncio.sleep(0.02)
            pods.extend(add_one_gpu_pods(sim, round_ * 40, 40))
            sim.cluster.compact()
            await eventually(lambda: len(run.memory.records) == len(pods), timeout=20, what="new pods")
        await asyncio.sleep(0.3)
        assert records_per_pod(run) == Counter(dict.fromkeys(pods, 1))
        assert sim.cluster.request_counts["exec"] == 200
        assert run.sample("gpuid_watch_restarts_total", reason="expired") >= 4


async def test_only_the_2_percent_of_failing_execs_are_retried(sim: Sim) -> None:
    pods = add_one_gpu_pods(sim, 0, 200)
    failing, hanging = pods[10:12], pods[100:102]
    for pod in failing:
        sim.cluster.set_exec(pod, exit_code=1, stderr=b"Unable to determine the device handle")
    for pod in hanging:
        sim.cluster.set_exec(pod, hang=True)
    async with running_app(sim, WORKERS="16", TIMEOUT="1s", RETRY_MAX_BACKOFF="0.5s") as run:
        await eventually(lambda: len(run.memory.records) == 196, timeout=30, what="the healthy pods")
        await eventually(lambda: run.sample("gpuid_scans_total", result="exec_error") >= 4, what="retries")
        await eventually(lambda: run.sample("gpuid_scans_total", result="timeout") >= 4, what="retries")
        for pod in failing + hanging:
            sim.cluster.set_exec(pod)  # healed: the next retry succeeds
        await eventually(lambda: len(run.memory.records) == 200, timeout=20, what="the healed pods")
        await asyncio.sleep(0.3)
        assert records_per_pod(run) == Counter(dict.fromkeys(pods, 1))
        failures = run.sample("gpuid_scans_total", result="exec_error") + run.sample(
            "gpuid_scans_total", result="timeout"
        )
        assert run.sample("gpuid_scans_total", result="success") == 200
        assert sim.cluster.request_counts["exec"] == 200 + failures  # no healthy pod exec'd twice


async def test_a_pod_deleted_mid_exec_gives_no_record_and_no_crash(sim: Sim) -> None:
    doomed, healthy = add_one_gpu_pods(sim, 0, 2)
    sim.cluster.set_exec(doomed, delay=10)
    async with running_app(sim) as run:
        await eventually(lambda: records_per_pod(run)[healthy] == 1)
        await eventually(lambda: sim.server.open_exec_sessions == 1, what="the slow exec")
        sim.cluster.delete_pod(doomed)
        await eventually(lambda: run.sample("gpuid_scans_total", result="exec_error") == 1)
        await eventually(lambda: run.sample("gpuid_pods_tracked") == 1, what="the pod forgotten")
        (late,) = add_one_gpu_pods(sim, 2, 1)  # gpuid is still at work
        await eventually(lambda: records_per_pod(run)[late] == 1)
        assert doomed not in records_per_pod(run)
        assert not run.task.done()
        assert sim.cluster.request_counts["exec"] == 3  # the deleted pod is not retried
