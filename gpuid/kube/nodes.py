"""The node directory: which machine each node is, from one node watch shared by every feature.

Records carry the machine behind a node (the tail of ``spec.providerID``);
node labels need the labels a node carries now; bug-report requests arrive as
node annotations. One node watch serves them all, so no scan or feature ever
costs a node GET. Who listens to node events is decided by whoever builds
the directory (``gpuid.app``), through the constructor. Nodes are optional:
when the API server refuses the node watch, gpuid keeps scanning (records
have ``machine=null`` for nodes it never saw) and asks again every 5 minutes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Sequence

from gpuid.kube.informer import Informer, ListFn
from gpuid.kube.objects import NodeInfo, slim_node
from gpuid.metrics import Metrics

NodeListener = Callable[[str, NodeInfo], None]
# Nodes refused (401/403: RBAC or a token being rotated): records carry machine=null and the watch
# is retried this often, so fixing the ClusterRole needs no restart yet costs the API server nothing.
DENIED_RETRY_SECONDS = 300.0


class NodeDirectory:
    """Node name → what gpuid keeps of it, kept current by a node watch; empty when nodes are unreadable."""

    def __init__(
        self,
        list_nodes: ListFn,
        metrics: Metrics,
        *,
        node_name: str = "",
        label_prefix: str = "",
        annotation_keys: Collection[str] = (),
        listeners: Sequence[NodeListener] = (),
    ) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        selector = f"metadata.name={node_name}" if node_name else ""
        slim = functools.partial(slim_node, label_prefix=label_prefix, annotation_keys=tuple(annotation_keys))
        self.informer = Informer(
            "node",
            list_nodes,
            slim,
            self._on_event,
            metrics,
            permanent_retry=DENIED_RETRY_SECONDS,
            field_selector=selector,
        )
        self._listeners = tuple(listeners)

    @property
    def readable(self) -> bool:
        """False while the API server refuses the node watch (401/403): machines are unknown then."""
        return not self.informer.denied

    def _on_event(self, kind: str, node: NodeInfo) -> None:
        if kind == "DELETED":
            self._nodes.pop(node.name, None)
        else:
            self._nodes[node.name] = node
        for listener in self._listeners:
            listener(kind, node)

    def machine(self, node: str) -> str | None:
        info = self._nodes.get(node)
        return info.machine if info is not None else None

    def owned_labels(self, node: str) -> dict[str, str]:
        """The labels under the watch's prefix that ``node`` carries, as last seen."""
        info = self._nodes.get(node)
        return dict(info.owned_labels) if info is not None else {}

    def note_labels(self, node: str, labels: dict[str, str]) -> None:
        """What a PATCH answered: the node's labels under the prefix now (the watch event follows)."""
        info = self._nodes.get(node)
        if info is not None:
            self._nodes[node] = dataclasses.replace(info, owned_labels=tuple(sorted(labels.items())))

    async def run(self) -> None:
        await self.informer.run()
