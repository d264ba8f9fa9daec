"""How many GPUs a node should answer with, from what it advertises: the missing-GPU rule.

A node that advertises 8 GPUs and whose nvidia-smi lists 7 has lost one (off
the bus, a failed board, a VM that came back with fewer). What a node
advertises is not always a count of physical GPUs, so the rule is explicit
(``EXPECTED_GPUS``, default ``auto``):

1. MIG: never checked. With ``nvidia.com/mig.strategy`` ``single`` both the
   ``nvidia.com/gpu`` capacity and GPU Feature Discovery's
   ``nvidia.com/gpu.count`` count MIG devices; with ``mixed`` the capacity
   leaves MIG GPUs out. A node is taken to use MIG when its product label
   carries ``-MIG-``, it advertises any ``nvidia.com/mig-*`` resource, or the
   scan itself found a GPU in MIG mode.
2. ``label`` (and ``auto`` first): ``nvidia.com/gpu.count``, GFD's count of
   physical GPUs, unaffected by time-slicing and MPS.
3. ``capacity`` (and ``auto`` without the label): the ``nvidia.com/gpu``
   capacity (``nvidia.com/gpu.shared`` with renamed sharing) divided by
   ``nvidia.com/gpu.replicas`` when time-slicing or MPS multiplies it; a
   capacity that does not divide evenly is not trusted.
4. ``off``, or nothing advertised: no expectation, nothing is checked.
"""

from __future__ import annotations

from gpuid.kube.objects import NodeInfo

EXPECTED_SOURCES = ("auto", "label", "capacity", "off")
COUNT_LABEL = "nvidia.com/gpu.count"
REPLICAS_LABEL = "nvidia.com/gpu.replicas"
PRODUCT_LABEL = "nvidia.com/gpu.product"


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def uses_mig(node: NodeInfo, *, mig_seen: bool) -> bool:
    """Whether the node's advertised GPUs may be MIG devices (then no count is trusted)."""
    return mig_seen or node.mig_capacity > 0 or "-MIG-" in node.gpu_label(PRODUCT_LABEL).upper()


def from_capacity(node: NodeInfo) -> int | None:
    if node.gpu_capacity is None:
        return None
    replicas = _number(node.gpu_label(REPLICAS_LABEL)) or 1
    count, rest = divmod(node.gpu_capacity, replicas)
    return count if rest == 0 else None


def expected_gpus(node: NodeInfo | None, *, mig_seen: bool, source: str = "auto") -> int | None:
    """The GPUs ``node`` should have by the rule above, or None when it cannot be told."""
    if node is None or source == "off" or uses_mig(node, mig_seen=mig_seen):
        return None
    label = _number(node.gpu_label(COUNT_LABEL)) if source in ("auto", "label") else None
    if label is not None or source == "label":
        return label
    return from_capacity(node)
