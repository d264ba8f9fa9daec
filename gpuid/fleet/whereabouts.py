"""Where each GPU was last recorded, so a GPU that turns up on another node is a *move*, found in O(1).

A GPU is known by its UUID and by its board serial (GB200 dies share one):
either, seen on another node, makes an arrival a move. Two sources answer:
the recorded state of every node (this term's, else its annotation), kept as
an index from UUID and serial to the nodes that hold them; and the GPUs that
left a node recently (``MAX_DEPARTED`` of them), for a GPU whose old node
was rescanned before it reappeared. The fleet tracker keeps both current.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from gpuid.fleet.state import NodeGpus, Slot

MAX_DEPARTED = 10_000  # GPUs remembered after leaving a node


def _keys(gpu: Slot) -> tuple[str, ...]:
    return tuple(k for k in (gpu.uuid, gpu.serial) if k)


class Whereabouts:
    def __init__(self) -> None:
        # uuid or serial -> the nodes whose recorded state has it: a tuple, almost always of one
        # (a set would cost four times the memory, and there are two keys per GPU of the fleet)
        self._holders: dict[str, tuple[str, ...]] = {}
        self._keys: dict[str, tuple[str, ...]] = {}  # node -> the keys it is held under
        self._departed: OrderedDict[str, str] = OrderedDict()  # uuid or serial -> the node it left

    def record(self, node: str, state: NodeGpus | None) -> None:
        """``node``'s recorded state is now ``state`` (None: nothing is recorded for it)."""
        keys = {k: None for g in state.gpus for k in _keys(g)} if state else {}
        old = self._keys.pop(node, ())
        holders = self._holders
        for key in old:
            if key not in keys:
                if rest := tuple(n for n in holders[key] if n != node):
                    holders[key] = rest
                else:
                    del holders[key]
        for key in keys:
            if node not in (held := holders.get(key, ())):
                holders[key] = (*held, node)
        if keys:
            self._keys[node] = tuple(keys)

    def located(self, node: str, gpu: Slot) -> str | None:
        """The other node ``gpu`` was last recorded on, if any."""
        for key in _keys(gpu):
            if others := [n for n in self._holders.get(key, ()) if n != node]:
                return min(others)
        for key in _keys(gpu):
            left = self._departed.get(key)
            if left is not None and left != node:
                return left
        return None

    def departed(self, node: str, gpus: Iterable[Slot]) -> None:
        """``gpus`` left ``node``."""
        for key in (k for g in gpus for k in _keys(g)):
            self._departed[key] = node
            self._departed.move_to_end(key)
        while len(self._departed) > MAX_DEPARTED:
            self._departed.popitem(last=False)

    def arrived(self, gpu: Slot | None) -> None:
        """``gpu`` turned up somewhere: where it left is told no more."""
        for key in _keys(gpu) if gpu is not None else ():
            self._departed.pop(key, None)
