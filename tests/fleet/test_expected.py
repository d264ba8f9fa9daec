"""The missing-GPU rule: what a node advertises, turned into the GPUs it should answer with."""

from __future__ import annotations

from typing import Any

import pytest

from gpuid.fleet.expected import expected_gpus
from gpuid.kube.objects import NodeInfo, slim_node


def node(capacity: dict[str, str] | None = None, **labels: str) -> NodeInfo:
    obj: dict[str, Any] = {
        "metadata": {"name": "n", "uid": "u", "labels": {k.replace("_", "."): v for k, v in labels.items()}},
        "status": {"capacity": {"cpu": "96", **(capacity or {})}},
    }
    return slim_node(obj)


GPU8 = {"nvidia.com/gpu": "8"}


def test_the_node_watch_keeps_what_a_node_advertises() -> None:
    info = node({"nvidia.com/gpu": "4", "nvidia.com/mig-1g.10gb": "7"}, **{"nvidia.com/gpu.count": "8"})
    assert (info.gpu_capacity, info.mig_capacity, info.uid) == (4, 7, "u")
    assert info.gpu_label("nvidia.com/gpu.count") == "8"
    assert node().gpu_capacity is None


@pytest.mark.parametrize(
    ("info", "mig_seen", "source", "expected"),
    [
        (node(GPU8), False, "auto", 8),  # device plugin only
        (node({"nvidia.com/gpu": "7"}, **{"nvidia.com/gpu.count": "8"}), False, "auto", 8),  # GFD first
        (
            node({"nvidia.com/gpu": "32"}, **{"nvidia.com/gpu.replicas": "4"}),
            False,
            "auto",
            8,
        ),  # time-slicing
        (
            node({"nvidia.com/gpu.shared": "16"}, **{"nvidia.com/gpu.replicas": "2"}),
            False,
            "auto",
            8,
        ),  # renamed
        (node({"nvidia.com/gpu": "30"}, **{"nvidia.com/gpu.replicas": "4"}), False, "auto", None),  # uneven
        (
            node({"nvidia.com/gpu": "56"}, **{"nvidia.com/gpu.product": "A100-SXM4-40GB-MIG-1g.5gb"}),
            False,
            "auto",
            None,
        ),
        (node({"nvidia.com/gpu": "4", "nvidia.com/mig-3g.40gb": "2"}), False, "auto", None),  # MIG mixed
        (node(GPU8), True, "auto", None),  # the scan found a GPU in MIG mode
        (node(GPU8, **{"nvidia.com/gpu.count": "7"}), False, "capacity", 8),
        (node(GPU8), False, "label", None),
        (node(GPU8), False, "off", None),
        (node(), False, "auto", None),  # a node without GPUs advertised
        (None, False, "auto", None),  # a node the watch does not know
    ],
)
def test_expected_gpus(info: NodeInfo | None, mig_seen: bool, source: str, expected: int | None) -> None:
    assert expected_gpus(info, mig_seen=mig_seen, source=source) == expected
