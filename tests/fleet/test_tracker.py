"""The tracker on its own: moves between nodes, in either order of the two scans, and terms."""

from __future__ import annotations

import dataclasses

import pytest

from gpuid.delivery.delivery import Delivery
from gpuid.fleet.settings import FleetSettings
from gpuid.fleet.tracker import FleetTracker
from gpuid.kube.objects import NodeInfo, PodInfo
from gpuid.metrics import Metrics
from gpuid.records import GPUReading, readings_from_report
from gpuid.smi.parse import parse_smi_xml
from tests.support.app import eventually
from tests.support.memory import MemoryExporter
from tests.support.records import capture_path, delivering, fast_delivery

REPORT = parse_smi_xml(capture_path("gpuid-h100-sxm-x8").read_bytes())


def gpus(node: str, tag: str) -> list[GPUReading]:
    """An 8 x H100 node whose UUIDs and serials are its own."""
    readings = readings_from_report(REPORT, cluster="c", node=node, machine=None, source="ns/p", pod_uid=node)
    return [
        dataclasses.replace(r, gpu_uuid=f"GPU-{tag}-{n}", gpu_serial=f"{tag}-serial-{n}")
        for n, r in enumerate(readings)
    ]


def pod(node: str) -> PodInfo:
    return PodInfo(f"uid-{node}", f"dp-{node}", "gpu-operator", node, True, 0, ("c",), None)


def tracker(delivery: Delivery, metrics: Metrics) -> FleetTracker:
    t = FleetTracker(FleetSettings(), cluster="c", delivery=delivery, metrics=metrics)
    for node in ("n1", "n2"):
        t.on_node_event("ADDED", NodeInfo(node, f"i-{node}", uid=node))
    t.start_term()
    return t


@pytest.mark.parametrize("n2_first", [True, False], ids=["arrival-first", "departure-first"])
async def test_a_gpu_that_turns_up_on_another_node_has_moved_whichever_is_scanned_first(
    n2_first: bool,
) -> None:
    memory, metrics = MemoryExporter(), Metrics()
    delivery = Delivery([memory], metrics, fast_delivery())
    t = tracker(delivery, metrics)
    n1, n2 = gpus("n1", "a"), gpus("n2", "b")
    t.on_scanned(pod("n1"), n1)  # first sights
    t.on_scanned(pod("n2"), n2)
    moved = dataclasses.replace(n1[3], node="n2", pci_bus_id=n2[5].pci_bus_id)  # into n2's slot 5
    scans = [(pod("n2"), [*n2[:5], moved, *n2[6:]]), (pod("n1"), n1[:3] + n1[4:])]
    async with delivering(delivery):
        for scanned, readings in scans if n2_first else scans[::-1]:
            t.on_scanned(scanned, readings)
        await eventually(lambda: len(memory.changes) == 2)
    by_kind = {c.change: c for c in memory.changes}
    assert set(by_kind) == {"moved", "removed"}
    move = by_kind["moved"]
    assert (move.node, move.from_node, move.gpu_uuid, move.new_serial) == (
        "n2",
        "n1",
        "GPU-a-3",
        "a-serial-3",
    )
    assert (move.old_uuid, move.old_serial, move.machine) == ("GPU-b-5", "b-serial-5", "i-n2")
    assert (by_kind["removed"].node, by_kind["removed"].gpu_uuid) == ("n1", "GPU-a-3")


async def test_in_memory_a_new_term_starts_from_nothing() -> None:
    memory, metrics = MemoryExporter(), Metrics()
    delivery = Delivery([memory], metrics, fast_delivery())
    t = tracker(delivery, metrics)
    t.on_scanned(pod("n1"), gpus("n1", "a"))
    t.end_term()
    t.start_term()
    t.on_scanned(pod("n1"), gpus("n1", "z"))  # a first sight again: nothing to compare with
    async with delivering(delivery):
        pass
    assert memory.changes == []
    assert metrics.registry.get_sample_value("gpuid_gpu_changes_total", {"change": "replaced"}) == 0
