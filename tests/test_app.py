"""The whole in-process pipeline against the simulated API server: watch → exec → parse → export."""

from __future__ import annotations

import json

import pytest

from gpuid.sim import bundled_capture
from tests.support.app import Sim, eventually, running_app
from tests.support.records import capture_path

H100 = "gpuid-h100-sxm-x8"
GB200 = "gpuid-gb200-x4"
A100_MIG = "telegraf-a100-sxm4-mig"


def add_gpu_node(sim: Sim, name: str, capture: str = H100, *, ready: bool = True) -> None:
    sim.cluster.add_node(name, capture=capture)
    sim.cluster.add_pod(f"dp-{name}", node=name, ready=ready)


async def test_one_record_per_gpu_uuid_per_pod_with_every_field(sim: Sim) -> None:
    add_gpu_node(sim, "n1", H100)
    add_gpu_node(sim, "n2", GB200)
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 12, what="12 records")
        await eventually(lambda: run.sample("gpuid_scans_total", result="success") == 2)
        assert sorted(run.uuids("dp-n1")) == sorted(bundled_capture(H100).gpu_uuids())
        gb200 = [r for r in run.memory.records if r.node == "n2"]
        assert len({r.gpu_uuid for r in gb200}) == 4
        assert len({r.gpu_serial for r in gb200}) == 2  # dual-die GPUs share a serial, not a record
        first = next(r for r in run.memory.records if r.node == "n1" and r.gpu_index == 0)
        pod = sim.cluster.pod("dp-n1")
        assert first.cluster == "test"
        assert first.source == "gpu-operator/dp-n1"
        assert first.pod_uid == pod["metadata"]["uid"]
        provider = sim.cluster.node("n1")["spec"]["providerID"]
        assert first.machine == provider.rsplit("/", 1)[-1]
        assert first.gpu_uuid == "GPU-ab6ab95d-8259-5551-5962-e4a7a710fbae"
        assert first.gpu_serial == "1652923034028"
        assert first.product_name == "NVIDIA H100 80GB HBM3"
        assert first.pci_bus_id == "00000000:04:00.0"
        assert (first.driver_version, first.cuda_version) == ("570.86.15", "12.8")
        assert first.observed_at.endswith("Z")
        assert run.sample("gpuid_gpus_observed") == 12
        # Steady state: nothing is scanned twice.
        assert sim.cluster.request_counts["exec"] == 2


async def test_mig_devices_come_from_nvidia_smi_list(sim: Sim) -> None:
    add_gpu_node(sim, "mig", A100_MIG)
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 1, what="the MIG GPU")
        rec = run.memory.records[0]
        assert rec.mig_mode == "Enabled"
        assert len(rec.mig_devices) == 4
        assert all(m.uuid and m.uuid.startswith("MIG-") for m in rec.mig_devices)
        assert all(m.gpu_instance_id is not None for m in rec.mig_devices)
        assert sim.cluster.request_counts["exec"] == 2  # -q -x, then -L


async def test_pod_that_never_becomes_ready_is_not_scanned_until_it_is(sim: Sim) -> None:
    add_gpu_node(sim, "ready", H100)
    add_gpu_node(sim, "slow", GB200, ready=False)
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 8)
        assert run.uuids("dp-slow") == []
        assert sim.cluster.request_counts["exec"] == 1
        sim.cluster.set_ready("dp-slow", True)
        await eventually(lambda: len(run.uuids("dp-slow")) == 4, what="the late pod")


async def test_container_restart_rescans_and_deleted_pods_are_forgotten(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 4)
        sim.cluster.restart_container("dp-n1", "nvidia-device-plugin")
        await eventually(lambda: len(run.memory.records) == 8, what="a rescan after the restart")
        assert run.sample("gpuid_pods_tracked") == 1
        sim.cluster.delete_pod("dp-n1")
        await eventually(lambda: run.sample("gpuid_pods_tracked") == 0, what="the pod to be forgotten")
        assert run.sample("gpuid_gpus_observed") == 0


async def test_failing_nvidia_smi_is_counted_retried_and_does_not_affect_others(sim: Sim) -> None:
    add_gpu_node(sim, "good", H100)
    add_gpu_node(sim, "bad", GB200)
    sim.cluster.set_exec(
        "dp-bad", exit_code=9, stderr=b"NVIDIA-SMI has failed because it couldn't communicate"
    )
    async with running_app(sim) as run:
        await eventually(lambda: run.sample("gpuid_scans_total", result="exec_error") >= 1)
        await eventually(lambda: len(run.uuids("dp-good")) == 8)
        assert run.uuids("dp-bad") == []
        sim.cluster.set_exec("dp-bad")  # the driver recovers
        await eventually(lambda: len(run.uuids("dp-bad")) == 4, timeout=20, what="the retry to succeed")
        assert run.sample("gpuid_scans_total", result="success") == 2


async def test_hung_exec_hits_the_deadline_while_other_pods_are_scanned(sim: Sim) -> None:
    add_gpu_node(sim, "hung", H100)
    for i in range(3):
        add_gpu_node(sim, f"ok{i}", GB200)
    sim.cluster.set_exec("dp-hung", hang=True)
    async with running_app(sim, TIMEOUT="1s", WORKERS="2") as run:
        await eventually(lambda: len(run.memory.records) == 12, what="the healthy pods")
        await eventually(lambda: run.sample("gpuid_scans_total", result="timeout") >= 1, what="the deadline")
        assert run.uuids("dp-hung") == []


async def test_missing_nvidia_smi_and_garbage_output_are_classified(sim: Sim) -> None:
    add_gpu_node(sim, "nosmi", H100)
    add_gpu_node(sim, "junk", H100)
    sim.cluster.set_exec("dp-nosmi", missing_smi=True)
    sim.cluster.set_exec("dp-junk", stdout=b"<html><body>not nvidia-smi</body></html>")
    async with running_app(sim) as run:
        await eventually(lambda: run.sample("gpuid_scans_total", result="parse_error") >= 1)
        await eventually(lambda: run.sample("gpuid_scans_total", result="exec_error") >= 1)
        assert run.memory.records == []


async def test_oversized_output_is_refused(sim: Sim) -> None:
    add_gpu_node(sim, "big", H100)
    sim.cluster.set_exec("dp-big", stdout=b"<nvidia_smi_log>" + b" " * 300_000)
    async with running_app(sim, MAX_OUTPUT_BYTES="65536") as run:
        await eventually(lambda: run.sample("gpuid_scans_total", result="exec_error") >= 1)
        assert run.memory.records == []


async def test_empty_container_uses_the_default_container_annotation(sim: Sim) -> None:
    sim.cluster.add_node("n1", capture=GB200)
    sim.cluster.add_pod(
        "dp-n1",
        node="n1",
        containers=("toolkit", "nvidia-device-plugin"),
        annotations={"kubectl.kubernetes.io/default-container": "nvidia-device-plugin"},
    )
    sim.cluster.add_node("n2", capture=GB200)
    sim.cluster.add_pod("dp-n2", node="n2", containers=("a", "b"))  # ambiguous: no annotation, two containers
    async with running_app(sim, CONTAINER="") as run:
        await eventually(lambda: len(run.uuids("dp-n1")) == 4, what="the annotated pod")
        await eventually(
            lambda: run.sample("gpuid_scans_total", result="exec_error") >= 1, what="the ambiguous pod"
        )
        assert run.uuids("dp-n2") == []
        assert sim.cluster.request_counts["exec"] == 1  # the ambiguous pod was never exec'd into


async def test_parse_error_names_the_pod_and_node_in_the_log(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    add_gpu_node(sim, "junk", H100)
    sim.cluster.set_exec("dp-junk", stdout=b"<nvidia_smi_log><gpu id='1'><uuid>GPU-1</uuid>")  # truncated
    async with running_app(sim) as run:
        await eventually(lambda: run.sample("gpuid_scans_total", result="parse_error") >= 1)
    logs = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    failure = next(e for e in logs if e["event"] == "pod scan failed")
    assert (failure["node"], failure["pod"], failure["result"]) == (
        "junk",
        "gpu-operator/dp-junk",
        "parse_error",
    )
    assert "gpu-operator/dp-junk" in failure["error"]


async def test_duplicate_uuids_in_one_scan_are_kept_counted_and_logged(sim: Sim) -> None:
    xml = capture_path("telegraf-dual-2080-duplicate-uuid").read_bytes()
    sim.cluster.add_capture("dual-2080", xml)
    add_gpu_node(sim, "dup", "dual-2080")
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 2)
        assert len(set(run.uuids())) == 1  # sanitised output: two GPUs, one UUID
        assert {r.gpu_index for r in run.memory.records} == {0, 1}
        assert run.sample("gpuid_duplicate_uuids_total") == 1
