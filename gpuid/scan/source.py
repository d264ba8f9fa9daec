"""Where nvidia-smi answers for a node: its device-plugin pod, its driver pod, or one then the other.

Driver pods matter twice: ``nvidia-bug-report.sh`` only exists in the driver
container, and on clusters whose device-plugin image lacks ``nvidia-smi``
the driver pod is where GPU identity can be read (``SCAN_SOURCE``). Both
need "the ready driver pod of node X", kept current by a second pod watch
(``DRIVER_NAMESPACE`` + ``DRIVER_LABEL_SELECTOR``), so no request costs a
pod list; that watch runs only when a feature needs it. ``IdentitySource``
is what the scanner asks: which container to exec into, and where else to
read a node whose pod has no nvidia-smi.
"""

from __future__ import annotations

import structlog

from gpuid.errors import ExecError
from gpuid.kube.informer import Informer, ListFn
from gpuid.kube.objects import PodInfo, slim_pod
from gpuid.metrics import Metrics
from gpuid.scan.settings import DriverSettings

log = structlog.get_logger("gpuid.driverpods")


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


class IdentitySource:
    """The scanner's answer to "which container, and where else": ``SCAN_SOURCE`` made concrete."""

    def __init__(self, container: str, drivers: DriverSettings, driver_pods: DriverPods | None) -> None:
        self._container = container
        self._drivers = drivers
        self._driver_pods = driver_pods if drivers.scan_source == "auto" else None

    def container_of(self, pod: PodInfo) -> str | None:
        """The container of ``pod`` that runs nvidia-smi; None when it cannot be told."""
        if self._drivers.scan_source == "driver":
            return driver_container(pod, self._drivers.container)
        return pod.container_for(self._container)

    async def fallback(self, pod: PodInfo, error: ExecError) -> tuple[PodInfo, str] | None:
        """With ``SCAN_SOURCE=auto``: the driver pod to read instead, when nvidia-smi is missing."""
        if self._driver_pods is None:
            return None
        return await self._driver_pods.fallback(pod, error)
