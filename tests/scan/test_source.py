"""SCAN_SOURCE: reading GPU identity from driver pods, alone or as the fallback of device-plugin pods."""

from __future__ import annotations

from gpuid.kube.objects import slim_pod
from gpuid.scan.source import driver_container
from gpuid.sim import bundled_capture
from tests.support.app import DRIVER_LABELS, Sim, add_driver_node, driver_pod_name, eventually, running_app

GB200 = "gpuid-gb200-x4"
H100 = "gpuid-h100-sxm-x8"


async def test_driver_container_is_chosen_like_the_gpu_operator_lays_it_out(sim: Sim) -> None:
    sim.cluster.add_pod(
        "plain", node="n", labels=DRIVER_LABELS, containers=("nvidia-peermem-ctr", "nvidia-driver-ctr")
    )
    sim.cluster.add_pod(
        "annotated",
        node="n",
        labels=DRIVER_LABELS,
        containers=("a", "b"),
        annotations={"kubectl.kubernetes.io/default-container": "b"},
    )
    sim.cluster.add_pod("single", node="n", labels=DRIVER_LABELS, containers=("ctr",))
    sim.cluster.add_pod("ambiguous", node="n", labels=DRIVER_LABELS, containers=("a", "b"))
    pods = {name: slim_pod(sim.cluster.pod(name)) for name in ("plain", "annotated", "single", "ambiguous")}
    assert driver_container(pods["plain"]) == "nvidia-driver-ctr"  # the first whose name says "driver"
    assert driver_container(pods["annotated"]) == "b"
    assert driver_container(pods["single"]) == "ctr"
    assert driver_container(pods["ambiguous"]) is None
    assert driver_container(pods["ambiguous"], "a") == "a"  # DRIVER_CONTAINER wins


async def test_auto_falls_back_to_the_driver_pod_only_where_nvidia_smi_is_missing(sim: Sim) -> None:
    add_driver_node(sim, "nosmi", capture=GB200)
    add_driver_node(sim, "fine", capture=H100)
    sim.cluster.set_exec("dp-nosmi", missing_smi=True)
    async with running_app(sim, SCAN_SOURCE="auto") as run:
        await eventually(lambda: len(run.memory.records) == 12, what="records of both nodes")
        await eventually(lambda: run.sample("gpuid_scans_total", result="success") == 2)
        by_node = {r.node: r for r in run.memory.records}
        driver = sim.cluster.pod(driver_pod_name("nosmi"))
        assert by_node["nosmi"].source == f"gpu-operator/{driver_pod_name('nosmi')}"
        assert by_node["nosmi"].pod_uid == driver["metadata"]["uid"]
        assert by_node["fine"].source == "gpu-operator/dp-fine"
        nosmi = sorted(r.gpu_uuid for r in run.memory.records if r.node == "nosmi")
        assert nosmi == sorted(bundled_capture(GB200).gpu_uuids())  # each GPU once, not twice
        assert sim.cluster.request_counts["exec"] == 3  # fine; nosmi (127), then its driver pod
        assert run.sample("gpuid_scans_total", result="exec_error") == 0


async def test_auto_without_a_driver_pod_fails_the_scan_clearly(sim: Sim) -> None:
    sim.cluster.add_node("lonely", capture=GB200)
    sim.cluster.add_pod("dp-lonely", node="lonely")
    sim.cluster.set_exec("dp-lonely", missing_smi=True)
    async with running_app(sim, SCAN_SOURCE="auto") as run:
        await eventually(lambda: run.sample("gpuid_scans_total", result="exec_error") >= 1)
        assert run.memory.records == []


async def test_driver_source_scans_driver_pods_instead_of_device_plugin_pods(sim: Sim) -> None:
    add_driver_node(sim, "n1", capture=GB200)
    add_driver_node(sim, "n2", capture=H100, device_plugin=False)
    async with running_app(sim, SCAN_SOURCE="driver") as run:
        await eventually(lambda: len(run.memory.records) == 12, what="records from both driver pods")
        await eventually(lambda: run.sample("gpuid_scans_total", result="success") == 2)
        assert {r.source for r in run.memory.records} == {
            f"gpu-operator/{driver_pod_name('n1')}",
            f"gpu-operator/{driver_pod_name('n2')}",
        }
        assert sim.cluster.request_counts["exec"] == 2  # the device-plugin pod on n1 was not touched
