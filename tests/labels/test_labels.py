"""Node labels: the Go gpuid's key scheme, sanitised values, minimal and safe PATCHes."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import pytest

from gpuid.config import load_settings
from gpuid.errors import ConfigError
from gpuid.labels.scheme import MAX_GPUS, MAX_LABELS, desired_labels, label_patch, sanitize
from gpuid.records import GPUReading, readings_from_report
from gpuid.sim import bundled_capture
from gpuid.smi.parse import parse_smi_xml
from tests.support.app import GB200, H100, Sim, eventually, running_app

H100_SERIALS = sorted(
    [
        "1652923034028",
        "1652923034291",
        "1653023018213",
        "1652823054567",
        "1652823055642",
        "1652823055931",
        "1652823055647",
        "1652923033989",
    ]
)


def readings(capture: str) -> list[GPUReading]:
    report = parse_smi_xml(bundled_capture(capture).xml)
    return readings_from_report(report, cluster="c", node="n", machine=None, source="ns/p", pod_uid="u")


def test_h100_node_without_chassis_gets_gpu_keys_in_serial_order() -> None:
    labels = desired_labels("gpuid.io", readings(H100))
    expected = {f"gpuid.io/gpu-{j}": s for j, s in enumerate(H100_SERIALS)}
    assert labels == {**expected, "gpuid.io/chassis-count": "1"}


def test_gb200_dies_sharing_a_serial_get_one_chassis_indexed_key() -> None:
    assert desired_labels("gpuid.github.com", readings(GB200)) == {
        "gpuid.github.com/chassis-0": "1821225190819",
        "gpuid.github.com/chassis-0-gpu-0": "1761025346615",
        "gpuid.github.com/chassis-0-gpu-1": "1761125340953",
        "gpuid.github.com/chassis-count": "1",
    }


def test_several_chassis_are_indexed_in_serial_order_and_unknowns_are_na() -> None:
    gb = readings(GB200)
    mixed = [
        dataclasses.replace(gb[0], chassis_serial="B-2"),
        dataclasses.replace(gb[2], chassis_serial="A 1"),
        dataclasses.replace(gb[3], chassis_serial="A 1", gpu_serial=None),
    ]
    assert desired_labels("p.io", mixed) == {
        "p.io/chassis-0": "A-1",
        "p.io/chassis-0-gpu-0": "na",  # unknown sorts first
        "p.io/chassis-0-gpu-1": "1761125340953",
        "p.io/chassis-1": "B-2",
        "p.io/chassis-1-gpu-0": "1761025346615",
        "p.io/chassis-count": "2",
    }


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (None, "na"),
        ("", "na"),
        ("N/A", "na"),
        ("@@@", "na"),
        ("1652923034028", "1652923034028"),
        ("SN 12/34", "SN-12-34"),
        ("-._x._-", "x"),
        ("a.b_c-d", "a.b_c-d"),
        ("x" * 62 + "-yz", "x" * 62),  # cut to 63, then trimmed back to alphanumeric
    ],
)
def test_values_are_sanitised_into_valid_label_values(raw: str | None, value: str) -> None:
    assert sanitize(raw) == value


def test_patch_sets_changes_and_removes_only_what_differs() -> None:
    current = {"p.io/gpu-0": "a", "p.io/gpu-1": "b", "p.io/gpu-7": "old"}
    desired = {"p.io/gpu-0": "a", "p.io/gpu-1": "c", "p.io/chassis-count": "1"}
    assert label_patch(current, desired) == {"p.io/gpu-1": "c", "p.io/chassis-count": "1", "p.io/gpu-7": None}
    assert label_patch(desired, desired) is None


def test_a_label_prefix_that_is_not_a_dns_subdomain_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="LABEL_PREFIX"):
        load_settings({"CLUSTER_NAME": "t", "LABEL_PREFIX": "Bad_Prefix"})


# -- against the simulated API server --------------------------------------------------------------
def owned(sim: Sim, node: str, prefix: str = "gpuid.io/") -> dict[str, str]:
    return {k: v for k, v in sim.cluster.node(node)["metadata"]["labels"].items() if k.startswith(prefix)}


async def test_scanned_nodes_are_labelled_stale_keys_removed_and_rescans_cost_nothing(sim: Sim) -> None:
    sim.cluster.add_node("n1", capture=H100, labels={"gpuid.io/gpu-9": "old", "team": "ml"})
    sim.cluster.add_pod("dp-n1", node="n1")
    sim.cluster.add_node("n2", capture=GB200)
    sim.cluster.add_pod("dp-n2", node="n2")
    async with running_app(sim, NODE_LABELS="true") as run:
        await eventually(lambda: run.sample("gpuid_node_label_updates_total", result="patched") == 2)
        assert owned(sim, "n1") == desired_labels("gpuid.io", readings(H100))  # gpu-9 is gone
        assert sim.cluster.node("n1")["metadata"]["labels"]["team"] == "ml"
        assert owned(sim, "n2") == desired_labels("gpuid.io", readings(GB200))
        assert sim.cluster.request_counts["patch node"] == 2
        sim.cluster.restart_container("dp-n1")  # same GPUs on the rescan: no PATCH
        await eventually(lambda: run.sample("gpuid_scans_total", result="success") == 3)
        assert run.sample("gpuid_node_label_updates_total", result="unchanged") == 1
        assert sim.cluster.request_counts["patch node"] == 2


@pytest.mark.parametrize(("status", "result"), [(403, "forbidden"), (422, "invalid")])
async def test_forbidden_and_invalid_are_counted_and_not_retried(sim: Sim, status: int, result: str) -> None:
    sim.cluster.add_node("n1", capture=H100)
    sim.cluster.add_pod("dp-n1", node="n1")
    sim.cluster.fail_requests(1, status, path_contains="/nodes/n1")
    async with running_app(sim, NODE_LABELS="true") as run:
        await eventually(lambda: run.sample("gpuid_node_label_updates_total", result=result) == 1)
        await eventually(lambda: len(run.memory.records) == 8)  # the scan itself is unaffected
        await asyncio.sleep(1.2)  # longer than the first retry would wait
        assert sim.cluster.request_counts["patch node"] == 1
        assert owned(sim, "n1") == {}


async def test_transient_failures_are_retried(sim: Sim) -> None:
    sim.cluster.add_node("n1", capture=H100)
    sim.cluster.add_pod("dp-n1", node="n1")
    sim.cluster.fail_requests(1, 500, path_contains="/nodes/n1")
    async with running_app(sim, NODE_LABELS="true", LABEL_PREFIX="gpuid.github.com") as run:
        await eventually(lambda: run.sample("gpuid_node_label_updates_total", result="patched") == 1)
        assert run.sample("gpuid_node_label_updates_total", result="error") == 1
        assert sim.cluster.request_counts["patch node"] == 2
        assert owned(sim, "n1", "gpuid.github.com/") == desired_labels("gpuid.github.com", readings(H100))


# -- caps: a pod's nvidia-smi cannot write thousands of labels onto its Node ------------------------
def many_gpus(count: int, *, chassis_each: bool = False) -> list[GPUReading]:
    one = readings(H100)[0]
    return [
        dataclasses.replace(
            one,
            gpu_uuid=f"GPU-{i:08d}-0000-0000-0000-000000000000",
            gpu_serial=f"S{i:06d}",
            chassis_serial=f"C{i:06d}" if chassis_each else None,
        )
        for i in range(count)
    ]


def test_more_gpus_or_labels_than_the_caps_give_no_labels() -> None:
    assert (MAX_GPUS, MAX_LABELS) == (64, 100)
    assert len(desired_labels("p.io", many_gpus(MAX_GPUS)) or {}) == MAX_GPUS + 1
    assert desired_labels("p.io", many_gpus(MAX_GPUS + 1)) is None
    assert len(desired_labels("p.io", many_gpus(49, chassis_each=True)) or {}) == 99
    assert desired_labels("p.io", many_gpus(50, chassis_each=True)) is None  # 101 labels
    assert desired_labels("p.io", many_gpus(5000)) is None


def capture_with_gpus(count: int, *, chassis: bool = False) -> bytes:
    """The H100 capture's first GPU, ``count`` times over, each with its own UUID and serial (and chassis)."""
    xml = bundled_capture(H100).xml.decode()
    start, end = xml.index("<gpu "), xml.index("</gpu>") + len("</gpu>")
    gpu = xml[start:end]
    uuid = re.search(r"<uuid>([^<]+)</uuid>", gpu)
    serial = re.search(r"<serial>([^<]+)</serial>", gpu)
    assert uuid
    assert serial
    copies = [
        gpu.replace(uuid.group(1), f"GPU-{i:08x}-1111-2222-3333-444444444444")
        .replace(serial.group(1), f"99{i:011d}")
        .replace(
            "<chassis_serial_number>N/A</chassis_serial_number>",
            f"<chassis_serial_number>18{i:011d}</chassis_serial_number>" if chassis else "",
            1 if chassis else 0,
        )
        for i in range(count)
    ]
    return (xml[:start] + "".join(copies) + xml[xml.rindex("</gpu>") + len("</gpu>") :]).encode()


async def test_a_node_needing_too_many_labels_gets_none_and_is_counted(sim: Sim) -> None:
    # 60 GPUs, each in its own chassis: 121 labels. (More than 64 GPUs never reach the labeller:
    # the parser refuses such a reply.)
    sim.cluster.add_capture("hostile", capture_with_gpus(60, chassis=True))
    sim.cluster.add_node("n1", capture="hostile", labels={"gpuid.io/gpu-0": "kept"})
    sim.cluster.add_pod("dp-n1", node="n1")
    async with running_app(sim, NODE_LABELS="true") as run:
        await eventually(lambda: run.sample("gpuid_node_label_updates_total", result="too_many") == 1)
        await eventually(lambda: len(run.memory.records) == 60)  # the records are true; labels are capped
        await asyncio.sleep(0.3)
        assert sim.cluster.request_counts["patch node"] == 0
        assert owned(sim, "n1") == {"gpuid.io/gpu-0": "kept"}
