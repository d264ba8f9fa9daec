"""Settings: every knob gpuid has, read from one mapping, validated up front.

Options are declared once in ``OPTIONS`` (environment variable, default, help),
which also drives ``gpuid --help`` and the CLI flags. ``load_settings`` is the
only place that turns strings into typed, frozen settings; it takes a mapping
so tests pass a dict, and it raises one ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from gpuid.errors import ConfigError
from gpuid.options import OPTIONS

T = TypeVar("T")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LEVELS = ("debug", "info", "warning", "error")
# Exporters that an EXPORTER_<NAME>=true flag turns on, so that kustomize components each set their
# own flag and compose; EXPORTER_TYPE (shared with the Go gpuid) is still read, the two are joined.
FLAGGED_EXPORTERS = ("stdout", "s3", "postgres", "http")


def parse_duration(text: str) -> float:
    """Seconds from ``"30s"``, ``"1m30s"``, ``"1h"``, ``"7d"``, ``"250ms"`` or ``"12.5"``."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h or seconds)")
    return total


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


class Env:
    """Typed, validated reads from a string mapping, defaults from ``OPTIONS``."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self._defaults = {o.env: o.default for o in OPTIONS}

    def str(self, name: builtins.str) -> builtins.str:
        raw = self._values.get(name)
        return (self._defaults.get(name, "") if raw is None else raw).strip()

    def _typed(self, name: builtins.str, conv: Callable[[builtins.str], T]) -> T:
        raw = self.str(name)
        try:
            return conv(raw)
        except ValueError as e:
            raise ConfigError(f"{name}={raw!r} is invalid: {e}") from None

    def int(self, name: builtins.str, *, minimum: int = 0) -> int:
        value = self._typed(name, int)
        if value < minimum:
            raise ConfigError(f"{name}={value} is invalid: must be >= {minimum}")
        return value

    def duration(self, name: builtins.str, *, positive: bool = True) -> float:
        value = self._typed(name, parse_duration)
        if positive and value <= 0:
            raise ConfigError(f"{name} must be a positive duration, got {self.str(name)!r}")
        return value

    def bool(self, name: builtins.str) -> bool:
        return self._typed(name, parse_bool)

    def choice(self, name: builtins.str, choices: tuple[builtins.str, ...]) -> builtins.str:
        value = self.str(name).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is invalid: choose one of {', '.join(choices)}")
        return value

    def list(self, name: builtins.str) -> tuple[builtins.str, ...]:
        return tuple(p.strip().lower() for p in self.str(name).split(",") if p.strip())


@dataclass(frozen=True)
class WatchSettings:
    namespace: str = "gpu-operator"
    label_selector: str = "app=nvidia-device-plugin-daemonset"
    container: str = "nvidia-device-plugin"
    node_name: str = ""


@dataclass(frozen=True)
class ScanSettings:
    workers: int = 16
    timeout: float = 30.0
    max_output_bytes: int = 32 * 1024 * 1024
    retry_base: float = 1.0
    retry_max: float = 300.0


@dataclass(frozen=True)
class Settings:
    cluster_name: str
    watch: WatchSettings = field(default_factory=WatchSettings)
    scan: ScanSettings = field(default_factory=ScanSettings)
    exporters: tuple[str, ...] = ("stdout",)
    shutdown_grace: float = 20.0
    log_level: str = "info"
    log_format: str = "auto"
    server_port: int = 8080
    kubeconfig: str = ""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)


def selected_exporters(env: Env) -> tuple[str, ...]:
    """EXPORTER_TYPE's names, then those turned on by an EXPORTER_<NAME> flag, each once; none = stdout."""
    named = env.list("EXPORTER_TYPE")
    if env.str("EXPORTER_TYPE") and not named:
        raise ConfigError("EXPORTER_TYPE must name at least one exporter")
    flagged = [name for name in FLAGGED_EXPORTERS if env.bool(f"EXPORTER_{name.upper()}")]
    return tuple(dict.fromkeys([*named, *flagged])) or ("stdout",)


def load_settings(values: Mapping[str, str]) -> Settings:
    """Validate ``values`` (normally ``os.environ``) into ``Settings``."""
    env = Env(values)
    cluster = env.str("CLUSTER_NAME")
    if not cluster:
        raise ConfigError("CLUSTER_NAME is required: set it to a name for this cluster")
    namespace = env.str("NAMESPACE")
    if not namespace:
        raise ConfigError("NAMESPACE must not be empty")
    exporters = selected_exporters(env)
    port = env.int("SERVER_PORT")
    if port > 65535:
        raise ConfigError(f"SERVER_PORT={port} is invalid: must be <= 65535")
    return Settings(
        cluster_name=cluster,
        watch=WatchSettings(
            namespace=namespace,
            label_selector=env.str("LABEL_SELECTOR"),
            container=env.str("CONTAINER"),
            node_name=env.str("NODE_NAME"),
        ),
        scan=ScanSettings(
            workers=env.int("WORKERS", minimum=1),
            timeout=env.duration("TIMEOUT"),
            max_output_bytes=env.int("MAX_OUTPUT_BYTES", minimum=1024),
            retry_max=env.duration("RETRY_MAX_BACKOFF"),
        ),
        exporters=exporters,
        shutdown_grace=env.duration("SHUTDOWN_GRACE"),
        log_level=env.choice("LOG_LEVEL", _LEVELS),
        log_format=env.choice("LOG_FORMAT", ("json", "console", "auto")),
        server_port=port,
        kubeconfig=env.str("KUBECONFIG"),
        env=dict(values),
    )
