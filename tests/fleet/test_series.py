"""The fleet series and the missing-GPU check, against the simulated cluster.

``gpuid_gpu_info`` carries dcgm-exporter's label names and gpuid's identity;
series come with a scan and go with the pod, the node or the term. A node
that advertises 8 GPUs and answers with 7 shows in the gauges and in a
``gpus_missing`` log line; MIG and time-sliced nodes raise no false alarm.
"""

from __future__ import annotations

import io
import json
from typing import Any

from gpuid.sim import bundled_capture
from tests.support.app import A100_MIG, GB200, H100, Running, Sim, add_gpu_node, eventually, running_app

FLEET = {"GPU_INFO_METRIC": "true", "NODE_GPU_METRICS": "true"}
H100_UUIDS = bundled_capture(H100).gpu_uuids()


def samples(run: Running, name: str) -> list[Any]:
    return [s for f in run.app.metrics.registry.collect() if f.name == name for s in f.samples]


def per_node(run: Running, name: str) -> dict[str, float]:
    return {s.labels["node"]: s.value for s in samples(run, name)}


def missing_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [
        line for raw in buffer.getvalue().splitlines() if (line := json.loads(raw))["event"] == "gpus_missing"
    ]


async def test_gpu_info_has_dcgm_exporter_labels_and_gpuid_identity(sim: Sim) -> None:
    add_gpu_node(sim, "n1", H100)
    add_gpu_node(sim, "n2", GB200)
    async with running_app(sim, **FLEET) as run:
        await eventually(lambda: len(samples(run, "gpuid_gpu_info")) == 12)
        info = {s.labels["UUID"]: s for s in samples(run, "gpuid_gpu_info")}
        first = info[H100_UUIDS[0]]
        assert first.value == 1
        assert first.labels == {
            "UUID": H100_UUIDS[0],
            "Hostname": "n1",
            "pci_bus_id": "00000000:04:00.0",
            "modelName": "NVIDIA H100 80GB HBM3",
            "gpu": "0",
            "node": "n1",
            "serial": "1652923034028",
            "chassis_serial": "",
            "module_id": "4",
            "machine": sim.cluster.node("n1")["spec"]["providerID"].rsplit("/", 1)[1],
        }
        gb200 = [s.labels for s in info.values() if s.labels["node"] == "n2"]
        assert {g["chassis_serial"] for g in gb200} == {"1821225190819"}
        assert per_node(run, "gpuid_node_gpus") == {"n1": 8, "n2": 4}
        assert per_node(run, "gpuid_node_gpu_capacity") == {"n1": 8, "n2": 4}
        assert run.sample("gpuid_nodes_missing_gpus") == 0
        sim.cluster.delete_pod("dp-n1")  # the pod goes away: its node's series go with it
        await eventually(lambda: {s.labels["node"] for s in samples(run, "gpuid_gpu_info")} == {"n2"})
        assert per_node(run, "gpuid_node_gpus") == {"n2": 4}
        sim.cluster.delete_node("n2")  # the node goes away (its pod may linger): so do its series
        await eventually(lambda: samples(run, "gpuid_gpu_info") == [])
        assert per_node(run, "gpuid_node_gpus") == {}


async def test_per_gpu_and_per_node_series_are_opt_in(sim: Sim) -> None:
    add_gpu_node(sim, "n1", H100)
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 8)
        assert samples(run, "gpuid_gpu_info") == []
        assert samples(run, "gpuid_node_gpus") == []
        assert run.sample("gpuid_nodes_missing_gpus") == 0  # the bounded gauge is always there


async def test_a_node_that_advertises_8_and_answers_7_is_missing_one(
    sim: Sim, log_output: io.StringIO
) -> None:
    add_gpu_node(sim, "n1", H100)  # advertises nvidia.com/gpu: 8
    sim.cluster.remove_gpu("n1", H100_UUIDS[3])  # before gpuid ever saw it: which slot is unknown
    add_gpu_node(sim, "n2", H100)
    async with running_app(sim, **FLEET, GPU_CHANGE_EVENTS="true") as run:
        await eventually(lambda: per_node(run, "gpuid_node_gpus") == {"n1": 7, "n2": 8})
        assert per_node(run, "gpuid_node_gpu_capacity") == {"n1": 8, "n2": 8}
        assert run.sample("gpuid_nodes_missing_gpus") == 1
        [line] = missing_lines(log_output)
        assert (line["node"], line["expected"], line["found"], line["missing_pci_bus_ids"]) == (
            "n1",
            8,
            7,
            None,
        )
        # n2 loses a GPU after gpuid recorded it: the slot is known, and it is a change.
        sim.cluster.remove_gpu("n2", H100_UUIDS[5])
        sim.cluster.restart_container("dp-n2")
        await eventually(lambda: run.sample("gpuid_nodes_missing_gpus") == 2)
        assert missing_lines(log_output)[-1]["missing_pci_bus_ids"] == ["00000000:85:00.0"]
        await eventually(lambda: run.sample("gpuid_gpu_changes_total", change="removed") == 1)
        [event] = sim.cluster.events(reason="GPURemoved")
        assert event["note"] == f"GPU removed at PCI 00000000:85:00.0: serial 1652823055931 ({H100_UUIDS[5]})"
        # The device plugin re-registers with 7: the node no longer advertises what it lacks.
        sim.cluster.update_node("n2", capacity={"nvidia.com/gpu": "7"})
        sim.cluster.restart_container("dp-n2")
        await eventually(lambda: run.sample("gpuid_nodes_missing_gpus") == 1)


async def test_mig_and_time_sliced_nodes_raise_no_false_alarm(sim: Sim, log_output: io.StringIO) -> None:
    mig = {"nvidia.com/mig.strategy": "single", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-1g.20gb"}
    sim.cluster.add_node("mig", capture=A100_MIG, labels=mig, capacity={"nvidia.com/gpu": "4"})
    sim.cluster.add_pod("dp-mig", node="mig")
    mixed = {"nvidia.com/gpu": "0", "nvidia.com/mig-1g.20gb": "4"}
    sim.cluster.add_node(
        "mixed", capture=A100_MIG, labels={"nvidia.com/mig.strategy": "mixed"}, capacity=mixed
    )
    sim.cluster.add_pod("dp-mixed", node="mixed")
    sliced = {"nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-SHARED"}
    sim.cluster.add_node("sliced", capture=H100, labels=sliced, capacity={"nvidia.com/gpu": "32"})
    sim.cluster.add_pod("dp-sliced", node="sliced")
    counted = {"nvidia.com/gpu.count": "8", "nvidia.com/gpu.replicas": "10"}
    sim.cluster.add_node("counted", capture=H100, labels=counted, capacity={"nvidia.com/gpu": "80"})
    sim.cluster.add_pod("dp-counted", node="counted")
    async with running_app(sim, **FLEET) as run:
        await eventually(lambda: len(per_node(run, "gpuid_node_gpus")) == 4)
        assert per_node(run, "gpuid_node_gpu_capacity") == {"sliced": 8, "counted": 8}  # MIG: not told
        assert run.sample("gpuid_nodes_missing_gpus") == 0
    assert missing_lines(log_output) == []


async def test_a_replica_that_loses_the_lease_drops_every_series(sim: Sim) -> None:
    add_gpu_node(sim, "n1", H100)
    election = {
        "LEADER_ELECTION": "true",
        "LEASE_NAMESPACE": "gpuid",
        "LEASE_DURATION": "2s",
        "LEASE_RENEW_DEADLINE": "1s",
        "LEASE_RETRY_PERIOD": "0.2s",
        "POD_NAME": "a",
    }
    async with running_app(sim, **FLEET, **election) as run:
        await eventually(lambda: len(samples(run, "gpuid_gpu_info")) == 8)
        sim.cluster.fail_requests(10_000, 503, path_contains="/leases/")  # it cannot renew
        await eventually(lambda: run.sample("gpuid_leader") == 0, what="the lease to be lost")
        await eventually(lambda: samples(run, "gpuid_gpu_info") == [], what="the term to end")
        assert samples(run, "gpuid_node_gpus") == []
        assert "gpuid_gpu_info{" not in run.app.metrics.render().decode()
        sim.cluster.clear_failures()
        await eventually(lambda: run.sample("gpuid_leader") == 1, what="the lease again")


async def test_a_new_leader_shows_the_gpus_its_predecessor_recorded_until_it_scans_them(sim: Sim) -> None:
    add_gpu_node(sim, "n1", H100)
    add_gpu_node(sim, "n2", GB200)
    env = {
        **FLEET,
        "GPU_CHANGE_EVENTS": "true",
        "LEADER_ELECTION": "true",
        "LEASE_NAMESPACE": "gpuid",
        "LEASE_DURATION": "20s",
        "LEASE_RENEW_DEADLINE": "5s",
        "LEASE_RETRY_PERIOD": "0.2s",
    }
    async with running_app(sim, POD_NAME="a", **env) as a:
        await eventually(lambda: len(samples(a, "gpuid_gpu_info")) == 12, what="a reads both nodes")
        await eventually(
            lambda: all(
                "gpuid.io/gpus" in sim.cluster.node(n)["metadata"].get("annotations", {})
                for n in ("n1", "n2")
            )
        )
        async with running_app(sim, POD_NAME="b", **env) as b:
            a.app.stop()
            assert await a.task == 0
            await eventually(lambda: len(samples(b, "gpuid_gpu_info")) == 12, what="b shows what a recorded")
            assert sim.cluster.request_counts["exec"] == 2  # b trusted a's checkpoint: no node read twice
            seeded = {s.labels["UUID"]: s.labels for s in samples(b, "gpuid_gpu_info")}
            first = seeded[H100_UUIDS[0]]
            assert (first["Hostname"], first["serial"], first["pci_bus_id"], first["modelName"]) == (
                "n1",
                "1652923034028",
                "00000000:04:00.0",
                "",  # not in the annotation: known once b scans n1 itself
            )
            sim.cluster.restart_container("dp-n1")
            await eventually(
                lambda: (
                    {s.labels["modelName"] for s in samples(b, "gpuid_gpu_info") if s.labels["node"] == "n1"}
                    == {"NVIDIA H100 80GB HBM3"}
                )
            )
            assert b.memory.changes == []
