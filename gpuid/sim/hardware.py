"""What changes inside a simulated node's chassis: a GPU swapped for another, a GPU that stops answering.

Operators meet these after maintenance: a node comes back with a different
board, or with one GPU fewer (fallen off the bus). The sim models them by
rewriting the node's real ``nvidia-smi -q -x`` capture, so the scan reads
them exactly as it reads a healthy node: the swapped GPU keeps its slot
(PCI bus id, module id) and gets a new UUID and board serial; a GPU that
stopped answering is simply not in the output. Nothing of this is visible
in the API (hardware is not a Kubernetes object); the node's advertised
capacity is changed separately, as the device plugin would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from gpuid.sim.captures import Capture
from gpuid.sim.events import Obj, WatchEvent, clone
from gpuid.sim.objects import merge_into

_GPU_BLOCK = re.compile(rb"[ \t]*<gpu id=\"[^\"]*\">.*?</gpu>\r?\n?", re.DOTALL)


def _block_of(xml: bytes, uuid: str) -> re.Match[bytes]:
    for block in _GPU_BLOCK.finditer(xml):
        if f"<uuid>{uuid}</uuid>".encode() in block.group(0):
            return block
    raise KeyError(f"no GPU {uuid} in this capture")


def replace_gpu(xml: bytes, uuid: str, *, new_uuid: str, new_serial: str) -> bytes:
    """``xml`` with GPU ``uuid`` swapped for another board in the same slot."""
    block = _block_of(xml, uuid)
    body = block.group(0).replace(f"<uuid>{uuid}</uuid>".encode(), f"<uuid>{new_uuid}</uuid>".encode())
    body, found = re.subn(
        rb"<serial>[^<]*</serial>", f"<serial>{new_serial}</serial>".encode(), body, count=1
    )
    if not found:
        raise KeyError(f"GPU {uuid} has no <serial> to replace")
    return xml[: block.start()] + body + xml[block.end() :]


def remove_gpu(xml: bytes, uuid: str) -> bytes:
    """``xml`` without GPU ``uuid``: it no longer answers (``attached_gpus`` counts one fewer)."""
    block = _block_of(xml, uuid)
    rest = xml[: block.start()] + xml[block.end() :]
    return re.sub(
        rb"<attached_gpus>(\d+)</attached_gpus>",
        lambda m: b"<attached_gpus>%d</attached_gpus>" % max(int(m.group(1)) - 1, 0),
        rest,
        count=1,
    )


class NodeHardware:
    """The switches above and the node's advertised GPUs, on the cluster (``SimCluster`` inherits this)."""

    _captures: dict[str, Capture]
    _node_capture: dict[str, str | None]

    def capture_for_node(self, node: str) -> Capture | None:
        raise NotImplementedError

    def _current(self, resource: str, key: tuple[str, str]) -> WatchEvent:
        raise NotImplementedError

    def _modify(self, resource: str, key: tuple[str, str], new: Obj) -> Obj:
        raise NotImplementedError

    def update_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str | None] | None = None,
        capacity: Mapping[str, str | None] | None = None,
    ) -> Obj:
        """Merge ``labels`` and ``capacity`` (also allocatable) into a node, None removing a key.

        One MODIFIED event: GPU Feature Discovery relabelling a node, the device plugin re-registering.
        """
        node = clone(self._current("nodes", ("", name)).obj)
        merge_into(node["metadata"].setdefault("labels", {}), labels)
        for part in ("capacity", "allocatable"):
            merge_into(node["status"].setdefault(part, {}), capacity)
        return self._modify("nodes", ("", name), node)

    def swap_gpu(self, node: str, uuid: str, *, new_uuid: str, new_serial: str) -> None:
        """From now on ``node`` answers with GPU ``uuid`` replaced by another board in the same slot."""
        self._rewrite(node, lambda xml: replace_gpu(xml, uuid, new_uuid=new_uuid, new_serial=new_serial))

    def remove_gpu(self, node: str, uuid: str) -> None:
        """From now on GPU ``uuid`` of ``node`` no longer answers (its advertised capacity stays)."""
        self._rewrite(node, lambda xml: remove_gpu(xml, uuid))

    def _rewrite(self, node: str, rewrite: Callable[[bytes], bytes]) -> None:
        current = self.capture_for_node(node)
        if current is None:
            raise KeyError(f"node {node!r} has no GPUs")
        name = f"{current.name}~{len(self._captures)}"
        self._captures[name] = Capture.from_xml(name, rewrite(current.xml))
        self._node_capture[node] = name
