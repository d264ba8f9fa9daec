"""The node state annotation and the diff: what counts as a change, and what it is called."""

from __future__ import annotations

import pytest

from gpuid.fleet.state import (
    MAX_ANNOTATION_BYTES,
    Change,
    NodeGpus,
    Slot,
    decode,
    diff,
    encode,
    event_name,
    fits,
    slots_of,
)
from gpuid.records import readings_from_report
from gpuid.smi.parse import parse_smi_xml
from tests.support.app import GB200, H100
from tests.support.records import capture_path

A = Slot("GPU-aaaaaaaa-0000-0000-0000-000000000000", "1652923034028", "00000000:04:00.0")
B = Slot("GPU-bbbbbbbb-0000-0000-0000-000000000000", "1652923034291", "00000000:05:00.0")
C = Slot("GPU-cccccccc-0000-0000-0000-000000000000", "1653023018213", "00000000:0B:00.0")
NEW = Slot("GPU-dddddddd-0000-0000-0000-000000000000", "1799999999999", "00000000:05:00.0")


def nowhere(_: Slot) -> str | None:
    return None


def state_of(capture: str) -> NodeGpus:
    report = parse_smi_xml(capture_path(capture).read_bytes())
    readings = readings_from_report(report, cluster="c", node="n", machine=None, source="s/p", pod_uid="u")
    return NodeGpus(3, slots_of(readings))


@pytest.mark.parametrize("capture", [H100, GB200])
def test_the_annotation_of_a_real_node_round_trips_and_stays_small(capture: str) -> None:
    state = state_of(capture)
    text = encode(state)
    assert decode(text) == state
    assert text.startswith("3;GPU-")
    assert len(text) < 80 * len(state.gpus)  # compact: about 70 bytes per GPU


def test_odd_serials_and_unknowns_survive_the_round_trip() -> None:
    state = NodeGpus(1, (Slot("GPU-1", "a,b=c@d;%e", None), Slot("GPU-2", None, "0000:01:00.0")))
    assert decode(encode(state)) == state


@pytest.mark.parametrize("text", ["", "x;GPU-1=1@2", "1;GPU-1", "1;=1@2", "GPU-1=1@2"])
def test_what_is_not_a_state_decodes_to_none(text: str) -> None:
    assert decode(text) is None


def test_too_many_gpus_do_not_fit_on_the_node() -> None:
    many = tuple(Slot(f"GPU-{i:036d}", f"{i:013d}", f"00000000:{i % 256:02X}:00.0") for i in range(400))
    assert not fits(NodeGpus(1, many))
    assert len(encode(NodeGpus(1, many))) > MAX_ANNOTATION_BYTES
    assert fits(NodeGpus(1, many[:100]))


def test_a_new_board_in_the_same_slot_is_a_replacement() -> None:
    assert diff(NodeGpus(1, (A, B, C)), (A, NEW, C), nowhere) == [Change("replaced", NEW, B)]


def test_gpus_that_come_and_go_in_other_slots_are_added_and_removed() -> None:
    added = Slot("GPU-eeee", "1700000000001", "00000000:0C:00.0")
    assert diff(NodeGpus(1, (A, B)), (A, B, added), nowhere) == [Change("added", added, None)]
    assert diff(NodeGpus(1, (A, B)), (A,), nowhere) == [Change("removed", None, B)]


def test_leftover_departures_and_arrivals_pair_up_as_replacements() -> None:
    elsewhere = Slot("GPU-ffff", "1700000000002", "00000000:99:00.0")
    assert diff(NodeGpus(1, (A, B)), (A, elsewhere), nowhere) == [Change("replaced", elsewhere, B)]


def test_an_arrival_last_recorded_on_another_node_has_moved() -> None:
    def located(gpu: Slot) -> str | None:
        return "node-b" if gpu.serial == NEW.serial else None

    assert diff(NodeGpus(1, (A, B)), (A, NEW), located) == [Change("moved", NEW, B, "node-b")]
    assert diff(NodeGpus(1, (A,)), (A, NEW), located) == [Change("moved", NEW, None, "node-b")]


def test_a_serial_that_becomes_known_is_no_change_and_a_different_one_is() -> None:
    unknown = Slot(A.uuid, None, A.pci_bus_id)
    assert diff(NodeGpus(1, (unknown,)), (A,), nowhere) == []
    other = Slot(A.uuid, "1111111111111", A.pci_bus_id)
    assert diff(NodeGpus(1, (A,)), (other,), nowhere) == [Change("replaced", other, A)]


def test_gb200_dies_sharing_a_serial_are_two_gpus() -> None:
    state = state_of(GB200)
    assert len(state.gpus) == 4
    assert len({g.serial for g in state.gpus}) == 2
    swapped = (*state.gpus[:3], Slot("GPU-new", "1761099999999", state.gpus[3].pci_bus_id))
    assert [c.kind for c in diff(state, swapped, nowhere)] == ["replaced"]


def test_event_names_are_one_per_transition() -> None:
    change = Change("replaced", NEW, B)
    first = event_name("gpu-node-1", NodeGpus(1, (A, B)), change)
    assert first == event_name("gpu-node-1", NodeGpus(1, (A, B)), change)  # a retry, a successor
    assert first != event_name("gpu-node-1", NodeGpus(3, (A, B)), change)  # the same swap, done again
    assert first != event_name("gpu-node-2", NodeGpus(1, (A, B)), change)
    assert first.startswith("gpu-node-1.gpuid-")
    long = event_name("n" * 250, NodeGpus(1, ()), change)
    assert len(long) <= 253
