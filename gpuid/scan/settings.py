"""Settings of scanning: which pods are watched, how they are scanned, and where nvidia-smi answers.

Parsed once at start-up by ``gpuid.config`` through ``Env`` (defaults and
help in ``gpuid.options``), so a bad value stops gpuid before any I/O with
one line naming the variable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gpuid.errors import ConfigError
from gpuid.options import DAY, HOUR, KIB, Env
from gpuid.smi.document import MAX_BYTES

SCAN_SOURCES = ("device-plugin", "driver", "auto")


@dataclass(frozen=True)
class WatchSettings:
    namespace: str = "gpu-operator"  # where the GPU Operator runs its device plugin
    label_selector: str = "app=nvidia-device-plugin-daemonset"
    container: str = "nvidia-device-plugin"
    node_name: str = ""  # per-node mode: only this node's pods

    @classmethod
    def from_env(cls, env: Env) -> WatchSettings:
        namespace = env.str("NAMESPACE")
        if not namespace:
            raise ConfigError("NAMESPACE must not be empty")
        return cls(
            namespace=namespace,
            label_selector=env.str("LABEL_SELECTOR"),
            container=env.str("CONTAINER"),
            node_name=env.str("NODE_NAME"),
        )

    @property
    def scope(self) -> str:
        """What the pod watch covers; a leader's checkpoint is only valid for the same scope."""
        return f"{self.namespace}|{self.label_selector}|{self.node_name}"


@dataclass(frozen=True)
class ScanSettings:
    workers: int = 64  # concurrent scans: exec latency bounds a sweep; 64 keeps RSS near 140 MiB
    timeout: float = 30.0  # nvidia-smi has no deadline of its own
    max_output_bytes: int = MAX_BYTES  # 4 MiB: ~11x the largest real reply (8 x B200, 357 KB)
    retry_base: float = 1.0
    retry_max: float = 300.0  # a broken node is retried every 5 minutes at most

    @classmethod
    def from_env(cls, env: Env) -> ScanSettings:
        return cls(
            # each worker holds an exec WebSocket and up to MAX_OUTPUT_BYTES: bounded like any buffer
            workers=env.int("WORKERS", minimum=1, maximum=1024),
            timeout=env.duration("TIMEOUT", minimum=1.0, maximum=HOUR),
            max_output_bytes=env.int("MAX_OUTPUT_BYTES", minimum=KIB, maximum=MAX_BYTES),  # the parser's cap
            retry_max=env.duration("RETRY_MAX_BACKOFF", minimum=0.1, maximum=DAY),
        )


@dataclass(frozen=True)
class DriverSettings:
    """The GPU Operator's driver pods, and whether scans read them (``SCAN_SOURCE``)."""

    namespace: str = "gpu-operator"  # the GPU Operator puts its driver DaemonSet next to the device plugin
    label_selector: str = "app.kubernetes.io/component=nvidia-driver"  # stable across NVIDIADriver CRDs
    container: str = ""  # empty: default-container annotation, else the first "*driver*" container
    scan_source: str = "device-plugin"  # the Go gpuid's behaviour

    @classmethod
    def from_env(cls, env: Env, watch: WatchSettings) -> DriverSettings:
        selector = env.str("DRIVER_LABEL_SELECTOR")
        if not selector:
            raise ConfigError("DRIVER_LABEL_SELECTOR must not be empty: it would match every pod")
        return cls(
            namespace=env.str("DRIVER_NAMESPACE") or watch.namespace,
            label_selector=selector,
            container=env.str("DRIVER_CONTAINER"),
            scan_source=env.choice("SCAN_SOURCE", SCAN_SOURCES),
        )

    def scanned_pods(self, watch: WatchSettings) -> WatchSettings:
        """The pods a scan session watches: with ``SCAN_SOURCE=driver``, the driver pods."""
        if self.scan_source != "driver":
            return watch
        return dataclasses.replace(watch, namespace=self.namespace, label_selector=self.label_selector)
