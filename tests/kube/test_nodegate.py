"""Per-node turns: one holder per node, other nodes unaffected, nothing kept once everyone is done."""

from __future__ import annotations

import asyncio

from gpuid.kube.nodegate import NodeExecGate


async def test_holders_of_one_node_take_turns_while_other_nodes_run_alongside() -> None:
    gate = NodeExecGate()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}

    async def hold(node: str) -> None:
        async with gate.hold(node):
            inside[node] += 1
            most[node] = max(most[node], inside[node])
            await asyncio.sleep(0.01)
            inside[node] -= 1

    first = asyncio.create_task(hold("a"))
    await asyncio.sleep(0)
    assert gate.busy("a")
    assert not gate.busy("b")
    await asyncio.gather(first, hold("a"), hold("a"), hold("b"), hold("b"))
    assert most == {"a": 1, "b": 1}
    assert gate.active == 0  # no entry outlives its holders
    assert not gate.busy("a")


async def test_a_cancelled_waiter_leaves_no_entry_behind() -> None:
    gate = NodeExecGate()
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.hold("a"):
            await release.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)

    async def waiter() -> None:
        async with gate.hold("a"):
            raise AssertionError("a cancelled waiter must never get the turn")

    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.wait([waiting])
    release.set()
    await held
    assert gate.active == 0
