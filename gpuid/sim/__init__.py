"""A simulated Kubernetes cluster for ``gpuid demo`` and the test-suite.

``SimCluster`` holds nodes and pods (and the faults to inject);
``SimApiServer`` serves them over real HTTP and WebSocket on 127.0.0.1 so
the unmodified kubernetes_asyncio client, and therefore gpuid itself, runs
against it exactly as against a cluster::

    cluster = demo_cluster(nodes=3)
    async with SimApiServer(cluster) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        ...  # point gpuid (or a CoreV1Api) at kubeconfig
        cluster.restart_container("nvidia-device-plugin-daemonset-abcde")

The GPUs each node reports come from real ``nvidia-smi`` captures bundled in
``gpuid/sim/captures``.
"""

from __future__ import annotations

import hashlib

from gpuid.sim.admission import AdmissionHook, ConnectRecord
from gpuid.sim.apiserver import SERVICE_ACCOUNT, SimApiServer
from gpuid.sim.captures import DEMO_CAPTURES, Capture, bundled_capture, bundled_capture_names
from gpuid.sim.cluster import DEFAULT_NAMESPACE, SimCluster
from gpuid.sim.events import WatchEvent
from gpuid.sim.faults import ExecBehaviour
from gpuid.sim.filters import ObjectFilter, SelectorError
from gpuid.sim.objects import DEVICE_PLUGIN_LABELS
from gpuid.sim.shell import ShellResult, run_command

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEMO_CAPTURES",
    "DEVICE_PLUGIN_LABELS",
    "SERVICE_ACCOUNT",
    "AdmissionHook",
    "Capture",
    "ConnectRecord",
    "ExecBehaviour",
    "ObjectFilter",
    "SelectorError",
    "ShellResult",
    "SimApiServer",
    "SimCluster",
    "WatchEvent",
    "bundled_capture",
    "bundled_capture_names",
    "demo_cluster",
    "device_plugin_pod_name",
    "run_command",
]

_POD_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated names


def device_plugin_pod_name(node: str) -> str:
    """A DaemonSet-style pod name (``nvidia-device-plugin-daemonset-xxxxx``), stable per node."""
    digest = hashlib.sha256(node.encode()).digest()
    suffix = "".join(_POD_SUFFIX_ALPHABET[b % len(_POD_SUFFIX_ALPHABET)] for b in digest[:5])
    return f"nvidia-device-plugin-daemonset-{suffix}"


def demo_cluster(nodes: int = 3) -> SimCluster:
    """Nodes ``gpu-node-1…N`` cycling H100 x8, GB200 x4 and A100 MIG, each with a ready device-plugin pod."""
    cluster = SimCluster()
    for i in range(1, nodes + 1):
        node = f"gpu-node-{i}"
        cluster.add_node(node, capture=DEMO_CAPTURES[(i - 1) % len(DEMO_CAPTURES)])
        cluster.add_pod(device_plugin_pod_name(node), node=node)
    return cluster
