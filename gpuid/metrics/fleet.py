"""The opt-in per-GPU and per-node series, rendered once per scan instead of once per scrape.

``GPU_INFO_METRIC`` and ``NODE_GPU_METRICS`` add one series per GPU or per
node: the only gpuid series whose label values are node and pod names. They
are bounded by ``MAX_FLEET_NODES`` and live in a custom collector whose text
is kept per node, so a scrape of a 40,000-GPU fleet joins strings instead of
formatting every sample again. ``gpuid.fleet.tracker`` fills it;
``gpuid.metrics.Metrics`` owns and renders it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# dcgm-exporter's label names first (UUID, Hostname, pci_bus_id, modelName, gpu): joins need no relabelling.
GPU_INFO_LABELS = (
    "UUID",
    "Hostname",
    "pci_bus_id",
    "modelName",
    "gpu",
    "node",
    "serial",
    "chassis_serial",
    "module_id",
    "machine",
)
MAX_FLEET_NODES = 20_000  # nodes whose series are kept; beyond it new nodes get none (and a log line)


@dataclass(frozen=True, slots=True)
class NodeSeries:
    """What the fleet series show of one node: its GPUs' label values and the GPUs it should have."""

    gpus: tuple[tuple[str, ...], ...]  # one tuple of GPU_INFO_LABELS values per GPU
    expected: int | None  # None: unknown (MIG, nothing advertised, EXPECTED_GPUS=off)

    @property
    def missing(self) -> bool:
        return self.expected is not None and len(self.gpus) < self.expected


_FAMILIES = (
    ("gpuid_gpu_info", "One series per GPU of the latest scans: its identity as labels"),
    ("gpuid_node_gpus", "GPUs in the latest scan of a node"),
    ("gpuid_node_gpu_capacity", "GPUs a node advertises (EXPECTED_GPUS rule)"),
)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    escaped = (v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in values)
    return ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True))


class FleetSeries(Collector):
    """A custom collector over node -> ``NodeSeries`` of the latest scan, filled only while scanning.

    The map is emptied when a term ends, so a replica that does not hold the
    Lease exports no per-GPU or per-node series at all. Each node's lines are
    rendered once, when its scan updates them: a scrape of 40,000 GPUs then
    joins strings instead of formatting every sample again (``Metrics.render``).
    """

    def __init__(self) -> None:
        self.nodes: dict[str, NodeSeries] = {}
        self._text: dict[str, tuple[str, str, str]] = {}  # node -> its lines of each of _FAMILIES
        self.gpu_info = False  # GPU_INFO_METRIC
        self.per_node = False  # NODE_GPU_METRICS
        self.rendering = False  # while Metrics.render runs: exposition() has the per-node families

    def update(self, node: str, series: NodeSeries) -> bool:
        """Show ``series`` for ``node``; False when the map is full and the node is new."""
        if node not in self.nodes and len(self.nodes) >= MAX_FLEET_NODES:
            return False
        self.nodes[node] = series
        where = _labels(("node",), (node,))
        self._text[node] = (
            "".join(f"gpuid_gpu_info{{{_labels(GPU_INFO_LABELS, g)}}} 1.0\n" for g in series.gpus),
            f"gpuid_node_gpus{{{where}}} {float(len(series.gpus))!r}\n",
            ""
            if series.expected is None
            else f"gpuid_node_gpu_capacity{{{where}}} {float(series.expected)!r}\n",
        )
        return True

    def drop(self, node: str) -> None:
        self.nodes.pop(node, None)
        self._text.pop(node, None)

    def clear(self) -> None:
        self.nodes.clear()
        self._text.clear()

    def exposition(self) -> str:
        """The per-GPU and per-node families in the text format, from the lines kept per node."""
        shown = (self.gpu_info, self.per_node, self.per_node)
        return "".join(
            f"# HELP {name} {text}\n# TYPE {name} gauge\n"
            + ("".join(t[k] for t in self._text.values()) if on else "")
            for k, ((name, text), on) in enumerate(zip(_FAMILIES, shown, strict=True))
        )

    def collect(self) -> Iterator[Metric]:
        missing = sum(s.missing for s in self.nodes.values())
        yield GaugeMetricFamily(
            "gpuid_nodes_missing_gpus",
            "Nodes whose latest scan found fewer GPUs than they advertise",
            missing,
        )
        if self.rendering:
            return
        info, found, capacity = (
            GaugeMetricFamily(name, text, labels=GPU_INFO_LABELS if name == "gpuid_gpu_info" else ["node"])
            for name, text in _FAMILIES
        )
        for node, series in self.nodes.items():
            for labels in series.gpus if self.gpu_info else ():
                info.add_metric(labels, 1)
            if self.per_node:
                found.add_metric([node], len(series.gpus))
                if series.expected is not None:
                    capacity.add_metric([node], series.expected)
        yield from (info, found, capacity)
