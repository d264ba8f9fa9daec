"""A GPU swapped on a simulated node is reported exactly once: one Event, one count, one record.

Also across a restart of gpuid and across a leader handover, including the
crash window in which a change was reported but the node's state annotation
was not written: the successor finds the change's Event and stays silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from typing import Any

from gpuid.fleet.state import ANNOTATION, decode
from gpuid.sim import bundled_capture
from tests.support.app import ELECTION, H100, Running, Sim, add_gpu_node, eventually, running_app

OLD = bundled_capture(H100).gpu_uuids()[1]  # serial 1652923034291, PCI 00000000:05:00.0
NEW, NEW_SERIAL = "GPU-5e1f0c2a-9b7d-4c3e-8a21-0f6d3b9e7a41", "1653124012345"
EVENTS = {"GPU_CHANGE_EVENTS": "true"}


def state(sim: Sim, node: str = "n1") -> Any:
    value = sim.cluster.node(node)["metadata"].get("annotations", {}).get(ANNOTATION)
    return decode(value) if value else None


def swap(sim: Sim, old: str = OLD, new: str = NEW, serial: str = NEW_SERIAL) -> None:
    """A technician swaps one board; the device-plugin pod restarts with the node."""
    sim.cluster.swap_gpu("n1", old, new_uuid=new, new_serial=serial)
    sim.cluster.restart_container("dp-n1")


def scans(run: Running) -> float:
    return run.sample("gpuid_scans_total", result="success")


def changed(run: Running, kind: str = "replaced") -> float:
    return run.sample("gpuid_gpu_changes_total", change=kind)


def log_lines(buffer: io.StringIO, event: str) -> list[dict[str, Any]]:
    return [line for raw in buffer.getvalue().splitlines() if (line := json.loads(raw))["event"] == event]


async def test_in_memory_a_swap_is_one_count_one_record_one_log_line_and_no_event(
    sim: Sim, log_output: io.StringIO
) -> None:
    add_gpu_node(sim, "n1")
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 8)
        assert run.memory.changes == []  # the first sight of a node is no change
        swap(sim)
        await eventually(lambda: len(run.memory.changes) == 1, what="the swap")
        sim.cluster.restart_container("dp-n1")  # the same GPUs again: nothing new
        await eventually(lambda: scans(run) == 3)
        await asyncio.sleep(0.2)
        [change] = run.memory.changes
        assert (change.change, change.node, change.gpu_uuid, change.old_uuid) == ("replaced", "n1", NEW, OLD)
        assert (change.old_serial, change.new_serial) == ("1652923034291", NEW_SERIAL)
        assert change.pci_bus_id == "00000000:05:00.0"
        assert (change.machine or "").startswith("i-0")
        assert changed(run) == 1
        assert sum(changed(run, k) for k in ("added", "removed", "moved")) == 0
    [line] = log_lines(log_output, "gpu_changed")
    assert (line["node"], line["change"], line["old_serial"], line["new_serial"]) == (
        "n1",
        "replaced",
        "1652923034291",
        NEW_SERIAL,
    )
    assert sim.cluster.events() == []  # Events need GPU_CHANGE_EVENTS
    assert state(sim) is None  # and so does the annotation


async def test_with_events_a_swap_is_reported_once_across_restarts(sim: Sim) -> None:
    add_gpu_node(sim, "n1")
    async with running_app(sim, **EVENTS) as first:
        await eventually(lambda: state(sim) is not None, what="the node's state")
        assert first.memory.changes == []
    assert state(sim).seq == 1
    assert len(state(sim).gpus) == 8
    assert sim.cluster.events() == []
    async with running_app(sim, **EVENTS) as second:  # a restart finds the same GPUs: nothing
        await eventually(lambda: scans(second) == 1)
        swap(sim)
        await eventually(lambda: len(sim.cluster.events()) == 1 and state(sim).seq == 2, what="the swap")
        await eventually(lambda: len(second.memory.changes) == 1)
        assert changed(second) == 1
    [event] = sim.cluster.events(reason="GPUReplaced")
    assert event["type"] == "Warning"
    assert event["regarding"]["kind"] == "Node"
    assert event["regarding"]["name"] == "n1"
    assert event["regarding"]["uid"] == sim.cluster.node("n1")["metadata"]["uid"]
    assert event["reportingController"] == "gpuid.io/gpuid"
    assert event["note"] == (
        f"GPU replaced at PCI 00000000:05:00.0: serial 1652923034291 ({OLD}) -> serial {NEW_SERIAL} ({NEW})"
    )
    assert NEW in {g.uuid for g in state(sim).gpus}
    assert OLD not in {g.uuid for g in state(sim).gpus}
    async with running_app(sim, **EVENTS) as third:  # and the next restart finds nothing new
        await eventually(lambda: scans(third) == 1)
        await asyncio.sleep(0.3)
        assert third.memory.changes == []
        assert changed(third) == 0
    assert len(sim.cluster.events()) == 1


async def test_a_change_reported_before_its_state_was_written_is_not_reported_again_after_a_restart(
    sim: Sim, log_output: io.StringIO
) -> None:
    add_gpu_node(sim, "n1")
    async with running_app(sim, **EVENTS):
        await eventually(lambda: state(sim) is not None)
    async with running_app(sim, **EVENTS) as crashed:
        await eventually(lambda: scans(crashed) == 1)
        sim.cluster.fail_requests(1, 403, path_contains="/api/v1/nodes/n1")  # the state write fails
        swap(sim)
        await eventually(lambda: crashed.sample("gpuid_gpu_change_errors_total", operation="annotation") == 1)
        await eventually(lambda: len(crashed.memory.changes) == 1)
    assert state(sim).seq == 1  # as if the process died between the report and the write
    async with running_app(sim, **EVENTS) as successor:
        await eventually(lambda: state(sim).seq == 2, what="the successor to write the state")
        assert successor.memory.changes == []
        assert changed(successor) == 0
    assert len(sim.cluster.events()) == 1
    assert len(log_lines(log_output, "gpu_changed")) == 1
    [skipped] = log_lines(log_output, "GPU change already reported")
    assert skipped["event_name"] == sim.cluster.events()[0]["metadata"]["name"]


async def test_a_change_is_reported_once_across_a_leader_handover(sim: Sim) -> None:
    add_gpu_node(sim, "n1")
    env = {
        **ELECTION,
        **EVENTS,
        "GPU_INFO_METRIC": "true",
        "LEASE_DURATION": "20s",
        "LEASE_RENEW_DEADLINE": "5s",
    }
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_app(sim, POD_NAME="a", **env))
        await eventually(lambda: a.sample("gpuid_leader") == 1 and state(sim) is not None, what="a leads")
        b = await stack.enter_async_context(running_app(sim, POD_NAME="b", **env))
        assert (len(gpu_info(a)), len(gpu_info(b))) == (8, 0)  # only the leader exports them
        sim.cluster.fail_requests(1, 403, path_contains="/api/v1/nodes/n1")  # a's state write fails
        swap(sim)
        await eventually(lambda: len(a.memory.changes) == 1, what="a reports the swap")
        await eventually(lambda: a.sample("gpuid_gpu_change_errors_total", operation="annotation") == 1)
        a.app.stop()
        assert await a.task == 0
        await eventually(lambda: b.sample("gpuid_leader") == 1, what="b leads")
        sim.cluster.restart_container("dp-n1")  # b reads the node itself: the same transition
        await eventually(lambda: state(sim).seq == 2, what="b writes the state")
        assert b.memory.changes == []
        assert len(sim.cluster.events()) == 1
        swap(sim, old=NEW, new="GPU-0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d", serial="1653124099999")
        await eventually(lambda: len(b.memory.changes) == 1, what="b reports the next swap")
        assert [c.old_uuid for c in b.memory.changes] == [NEW]
        assert changed(b) == 1
        assert len(sim.cluster.events(reason="GPUReplaced")) == 2
        assert {s.labels["UUID"] for s in gpu_info(b)} >= {"GPU-0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d"}


def gpu_info(run: Running) -> list[Any]:
    return [s for f in run.app.metrics.registry.collect() if f.name == "gpuid_gpu_info" for s in f.samples]
