"""The Event gpuid posts for each kind of change: what it says, and that the API server accepts it."""

from __future__ import annotations

import pytest

from gpuid.fleet.events import event_body, note
from gpuid.fleet.state import Change, Slot
from gpuid.sim.eventsapi import problems

OLD = Slot("GPU-7b151767-dab0-1c03-7c90-5231f72b47b2", "1652923034291", "00000000:05:00.0")
NEW = Slot("GPU-5e1f0c2a-9b7d-4c3e-8a21-0f6d3b9e7a41", "1653124012345", "00000000:05:00.0")

NOTES = {
    Change("added", NEW, None): f"GPU added at PCI 00000000:05:00.0: serial 1653124012345 ({NEW.uuid})",
    Change("removed", None, OLD): f"GPU removed at PCI 00000000:05:00.0: serial 1652923034291 ({OLD.uuid})",
    Change("replaced", NEW, OLD): (
        f"GPU replaced at PCI 00000000:05:00.0: serial 1652923034291 ({OLD.uuid})"
        f" -> serial 1653124012345 ({NEW.uuid})"
    ),
    Change(
        "moved", NEW, None, "gpu-3"
    ): f"GPU moved here from node gpu-3 at PCI 00000000:05:00.0: serial 1653124012345 ({NEW.uuid})",
    Change("moved", NEW, OLD, "gpu-3"): (
        f"GPU moved here from node gpu-3 at PCI 00000000:05:00.0: serial 1653124012345 ({NEW.uuid}),"
        f" replacing serial 1652923034291 ({OLD.uuid})"
    ),
    Change("added", Slot("GPU-x", None, None), None): "GPU added: serial unknown (GPU-x)",
}


@pytest.mark.parametrize(("change", "text"), NOTES.items())
def test_each_change_has_a_note_an_operator_can_act_on(change: Change, text: str) -> None:
    assert note(change) == text


@pytest.mark.parametrize("change", NOTES)
def test_every_event_passes_the_api_servers_validation(change: Change) -> None:
    body = event_body(
        "gpu-7.gpuid-0123456789abcdef", change, node="gpu-7", node_uid="u-1", instance="gpuid-0", token="t"
    )
    assert problems(body, "default") == []
    assert body["reason"] in ("GPUAdded", "GPURemoved", "GPUReplaced", "GPUMoved")
    assert body["regarding"] == {"apiVersion": "v1", "kind": "Node", "name": "gpu-7", "uid": "u-1"}


def test_a_long_instance_name_and_note_are_cut_to_the_limits() -> None:
    change = Change("moved", NEW, OLD, "n" * 2000)
    body = event_body("gpu-7.gpuid-1", change, node="gpu-7", node_uid="", instance="i" * 300, token="t")
    assert len(body["note"]) == 1024
    assert len(body["reportingInstance"]) == 128
    assert "uid" not in body["regarding"]
    assert problems(body, "default") == []
