"""What gpuid keeps of nodes: the machine behind each one, on every cloud's providerID shape."""

from __future__ import annotations

import pytest

from gpuid.kube.objects import machine_of, slim_node


@pytest.mark.parametrize(
    ("provider_id", "machine"),
    [
        ("aws:///us-east-1a/i-0abc1234def567890", "i-0abc1234def567890"),
        ("gce://my-project/us-central1-a/gke-pool-1-abcd-xyz1", "gke-pool-1-abcd-xyz1"),
        (
            "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/"
            "virtualMachineScaleSets/aks-gpu-12345678-vmss/virtualMachines/3",
            "aks-gpu-12345678-vmss/3",  # the index alone repeats in every node pool
        ),
        (
            "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/gpu-vm-7",
            "gpu-vm-7",
        ),
        ("kind://docker/kind/kind-worker", "kind-worker"),
        ("", None),
        (None, None),
    ],
)
def test_machine_is_the_vm_behind_the_node(provider_id: str | None, machine: str | None) -> None:
    assert machine_of(provider_id) == machine


def test_a_node_keeps_only_the_annotations_and_labels_it_was_asked_for() -> None:
    obj = {
        "metadata": {
            "name": "n1",
            "annotations": {"a.io/keep": "1", "a.io/drop": "2"},
            "labels": {"gpuid.io/gpu-0": "S1", "other.io/x": "y"},
        },
        "spec": {"providerID": "aws:///z/i-1"},
    }
    node = slim_node(obj, label_prefix="gpuid.io", annotation_keys=("a.io/keep",))
    assert node.annotation("a.io/keep") == "1"
    assert node.annotation("a.io/drop") == ""
    assert node.owned_labels == (("gpuid.io/gpu-0", "S1"),)
    assert node.machine == "i-1"
