"""Settings of the fleet signals: which per-GPU and per-node series, and whether nodes keep their state.

Per-GPU and per-node series are opt-in because their number grows with the
fleet (one ``gpuid_gpu_info`` series per GPU, two per node); change detection
always runs, in memory, and ``GPU_CHANGE_EVENTS`` adds what needs write
rights: the ``gpuid.io/gpus`` annotation on each Node and Kubernetes Events.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuid.fleet.expected import EXPECTED_SOURCES
from gpuid.options import Env

EVENTS_NAMESPACE = (
    "default"  # events.k8s.io accepts Events about a cluster-scoped Node only here or kube-system
)


@dataclass(frozen=True)
class FleetSettings:
    gpu_info: bool = False  # gpuid_gpu_info: one series per GPU
    node_metrics: bool = False  # gpuid_node_gpus and gpuid_node_gpu_capacity: two series per node
    change_events: bool = False  # node annotation + Events: needs patch on nodes, create/get on events
    expected_gpus: str = "auto"  # the missing-GPU rule of gpuid.fleet.expected
    instance: str = ""  # reportingInstance of the Events: this replica's identity

    @classmethod
    def from_env(cls, env: Env, instance: str) -> FleetSettings:
        return cls(
            gpu_info=env.bool("GPU_INFO_METRIC"),
            node_metrics=env.bool("NODE_GPU_METRICS"),
            change_events=env.bool("GPU_CHANGE_EVENTS"),
            expected_gpus=env.choice("EXPECTED_GPUS", EXPECTED_SOURCES),
            instance=instance,
        )
