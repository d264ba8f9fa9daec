"""Settings: every group gpuid has, parsed once from one mapping and composed here.

Each package parses its own group with ``Env`` (``WatchSettings.from_env`` in
``gpuid.scan.settings``, ``DeliverySettings.from_env`` in
``gpuid.delivery.settings`` ...). ``load_settings`` is the one place that hands
them the process's variables: it parses only what is selected (the S3 group
only with the s3 exporter or ``BUG_REPORT_S3``), takes a mapping so tests pass
a dict, and raises one ``ConfigError`` naming the variable, before any I/O.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gpuid.bugreport.settings import BugReportSettings
from gpuid.delivery.settings import DeliverySettings
from gpuid.errors import ConfigError
from gpuid.exporters import REGISTRY, ExporterSettings, check_names
from gpuid.exporters.http import HttpSettings
from gpuid.exporters.postgres.settings import PostgresSettings
from gpuid.exporters.s3client import S3Settings
from gpuid.fleet.settings import FleetSettings
from gpuid.kube.client import KubeSettings
from gpuid.labels.scheme import LabelSettings
from gpuid.leader.lease import LeaderSettings
from gpuid.options import HOUR, Env
from gpuid.scan.settings import DriverSettings, ScanSettings, WatchSettings

LOG_LEVELS = ("debug", "info", "warning", "error")
PLACEHOLDER_CLUSTER_NAMES = ("change-me", "changeme", "change_me")  # what deployment/base ships
LOG_FORMATS = ("json", "console", "auto")


@dataclass(frozen=True)
class Settings:
    cluster_name: str
    watch: WatchSettings = field(default_factory=WatchSettings)
    scan: ScanSettings = field(default_factory=ScanSettings)
    drivers: DriverSettings = field(default_factory=DriverSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    exporters: ExporterSettings = field(default_factory=ExporterSettings)
    bug_reports: BugReportSettings = field(default_factory=BugReportSettings)
    leader: LeaderSettings = field(default_factory=LeaderSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    shutdown_grace: float = 20.0  # fits Kubernetes' default terminationGracePeriodSeconds (30 s)
    log_level: str = "info"
    log_format: str = "auto"  # console on a TTY, JSON lines otherwise
    server_port: int = 8080
    kube: KubeSettings = field(default_factory=KubeSettings)


def exporter_names(env: Env) -> tuple[str, ...]:
    """``EXPORTER_TYPE``'s list plus every ``EXPORTER_<NAME>=true``; stdout when nothing is selected.

    The flags let deployment components each switch on their own exporter
    without overwriting another's choice; ``EXPORTER_TYPE`` keeps working.
    """
    listed = env.list("EXPORTER_TYPE")
    check_names(listed)
    flagged = tuple(name for name in REGISTRY if env.bool(f"EXPORTER_{name.upper()}"))
    return tuple(dict.fromkeys((*listed, *flagged))) or ("stdout",)


def environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The process's variables with ``overrides`` (the CLI's flags) laid over them."""
    return dict(os.environ) | dict(overrides)


def load_settings(values: Mapping[str, str]) -> Settings:
    """Validate ``values`` (normally ``os.environ`` with the CLI flags laid over it) into ``Settings``."""
    env = Env(values)
    cluster = env.str("CLUSTER_NAME")
    if not cluster:
        raise ConfigError("CLUSTER_NAME is required: set it to a name for this cluster")
    if cluster.lower() in PLACEHOLDER_CLUSTER_NAMES:
        raise ConfigError(
            f"CLUSTER_NAME={cluster!r} is the deployment's placeholder: set it to a name for this cluster"
            " in your overlay (docs/deploy.md)"
        )
    port = env.int("SERVER_PORT", minimum=0, maximum=65535)  # 0: any free port
    watch = WatchSettings.from_env(env)
    names = exporter_names(env)
    bug_reports = BugReportSettings.from_env(env, watch.node_name)
    s3 = S3Settings.from_env(env) if "s3" in names else None
    postgres = PostgresSettings.from_env(env) if "postgres" in names else None
    delivery = DeliverySettings.from_env(env)
    if postgres is not None and postgres.batch_size > delivery.queue_size:
        raise ConfigError(
            f"POSTGRES_BATCH_SIZE={postgres.batch_size} is invalid:"
            f" must be <= EXPORT_QUEUE_SIZE ({delivery.queue_size})"
        )
    leader = LeaderSettings.from_env(env, watch.node_name)
    return Settings(
        cluster_name=cluster,
        watch=watch,
        scan=ScanSettings.from_env(env),
        drivers=DriverSettings.from_env(env, watch),
        delivery=delivery,
        exporters=ExporterSettings(
            names=names,
            cluster=cluster,
            s3=s3,
            postgres=postgres,
            http=HttpSettings.from_env(env) if "http" in names else None,
        ),
        bug_reports=bug_reports,
        leader=leader,
        labels=LabelSettings.from_env(env),
        fleet=FleetSettings.from_env(env, leader.identity),
        shutdown_grace=env.duration("SHUTDOWN_GRACE", minimum=0.1, maximum=HOUR),
        log_level=env.choice("LOG_LEVEL", LOG_LEVELS),
        log_format=env.choice("LOG_FORMAT", LOG_FORMATS),
        server_port=port,
        kube=KubeSettings.from_env(env),
    )


def inventory_settings(values: Mapping[str, str]) -> PostgresSettings:
    """The ``POSTGRES_*`` group alone: ``gpuid inventory`` needs nothing else (no CLUSTER_NAME)."""
    return PostgresSettings.from_env(Env(values))
