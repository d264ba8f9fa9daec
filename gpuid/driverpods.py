"""The GPU Operator's driver pods: which one runs on which node, and which container to use.

Driver pods matter twice: ``nvidia-bug-report.sh`` only exists in the driver
container, and on clusters whose device-plugin image lacks ``nvidia-smi``
the driver pod is where GPU identity can be read (``SCAN_SOURCE``). Both
need "the ready driver pod of node X", kept current by a second pod watch
(``DRIVER_NAMESPACE`` + ``DRIVER_LABEL_SELECTOR``), so no request costs a
pod list. That watch runs only when a feature needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from gpuid.cluster import PodInfo, slim_pod
from gpuid.config import Env, Settings
from gpuid.errors import ConfigError, ExecError
from gpuid.metrics import Metrics
from gpuid.watch import Informer, ListFn

log = structlog.get_logger("gpuid.driverpods")
SCAN_SOURCES = ("device-plugin", "driver", "auto")


@dataclass(frozen=True)
class DriverSettings:
    namespace: str = "gpu-operator"  # the GPU Operator puts its driver DaemonSet next to the device plugin
    label_selector: str = "app.kubernetes.io/component=nvidia-driver"  # stable across NVIDIADriver CRDs
    container: str = ""  # empty: default-container annotation, else the first "*driver*" container
    scan_source: str = "device-plugin"  # gpuid's historical behaviour

    @classmethod
    def from_settings(cls, settings: Settings) -> DriverSettings:
        env = Env(settings.env)
        selector = env.str("DRIVER_LABEL_SELECTOR")
        if not selector:
            raise ConfigError("DRIVER_LABEL_SELECTOR must not be empty: it would match every pod")
        return cls(
            namespace=env.str("DRIVER_NAMESPACE") or settings.watch.namespace,
            label_selector=selector,
            container=env.str("DRIVER_CONTAINER"),
            scan_source=env.choice("SCAN_SOURCE", SCAN_SOURCES),
        )


def driver_container(pod: PodInfo, wanted: str = "") -> str | None:
    """``wanted``, else the default-container annotation, else the first ``*driver*`` container."""
    if wanted:
        return wanted
    if pod.default_container:
        return pod.default_container
    named = [c for c in pod.containers if "driver" in c]
    if named:
        return named[0]
    return pod.containers[0] if len(pod.containers) == 1 else None


class DriverPods:
    """Node name → its ready driver pod, from a watch of the driver pods."""

    def __init__(
        self, settings: DriverSettings, list_pods: ListFn, metrics: Metrics, node_name: str = ""
    ) -> None:
        self.settings = settings
        self._by_node: dict[str, dict[str, PodInfo]] = {}
        self.informer = Informer(
            "driver-pod",
            list_pods,
            slim_pod,
            self.on_pod_event,
            metrics,
            namespace=settings.namespace,
            label_selector=settings.label_selector,
            field_selector=f"spec.nodeName={node_name}" if node_name else "",
        )

    def on_pod_event(self, kind: str, pod: PodInfo) -> None:
        pods = self._by_node.setdefault(pod.node, {})
        if kind == "DELETED":
            pods.pop(pod.uid, None)
            if not pods:
                del self._by_node[pod.node]
        else:
            pods[pod.uid] = pod

    def pod_on(self, node: str) -> PodInfo | None:
        """The ready driver pod on ``node`` (the last by name if a rollout briefly left two), or None."""
        ready = sorted((p for p in self._by_node.get(node, {}).values() if p.ready), key=lambda p: p.name)
        return ready[-1] if ready else None

    def container_of(self, pod: PodInfo) -> str | None:
        return driver_container(pod, self.settings.container)

    def nodes(self) -> list[str]:
        """Nodes that have a ready driver pod, sorted."""
        return sorted(n for n in self._by_node if self.pod_on(n) is not None)

    async def fallback(self, pod: PodInfo, error: ExecError) -> tuple[PodInfo, str] | None:
        """``SCAN_SOURCE=auto``: where to read ``pod``'s node instead when nvidia-smi is missing in it."""
        if error.exit_code != 127:
            return None
        await self.informer.synced.wait()
        driver = self.pod_on(pod.node)
        if driver is None:
            raise ExecError(
                f"{error}; and no ready driver pod on node {pod.node} to fall back to",
                exit_code=127,
                stderr=error.stderr,
            )
        container = self.container_of(driver)
        if container is None:
            raise ExecError(f"driver pod {driver.source} has several containers: set DRIVER_CONTAINER")
        log.info("nvidia-smi missing in the pod; reading the driver pod", node=pod.node, pod=pod.source)
        return driver, container

    async def run(self) -> None:
        await self.informer.run()
