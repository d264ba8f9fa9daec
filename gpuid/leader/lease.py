"""The Lease's settings and its three REST calls, apart from the election logic.

``LeaderSettings`` reads and validates the ``LEASE_*`` variables once (the
timing rule ``duration > renew deadline > retry period > 0`` is what makes
"never two scanners" hold, so a violation is a configuration error, not a
warning). ``LeaseApi`` speaks to ``coordination.k8s.io/v1`` through
kubernetes_asyncio's ``CoordinationV1Api`` in raw mode: a Lease is a small
JSON object, and raw mode lets a 404 or 409 be an answer rather than an
exception — they are how the election learns "nobody holds it" and "someone
else won".
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from gpuid.errors import ConfigError
from gpuid.kube.api import call
from gpuid.options import DAY, Env

Lease = dict[str, Any]
DEFAULT_NAMESPACE = "gpuid"
REQUEST_SECONDS = 10.0


@dataclass(frozen=True)
class LeaderSettings:
    enabled: bool = False  # one replica needs no election; the kustomize base turns it on for two
    namespace: str = DEFAULT_NAMESPACE  # gpuid's own namespace, where its RBAC allows leases
    name: str = "gpuid"
    identity: str = ""  # the pod name (downward API); unique per replica
    duration: float = 15.0  # client-go's defaults: 15 s / 10 s / 2 s
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    @classmethod
    def from_env(cls, env: Env, node_name: str) -> LeaderSettings:
        """Read ``LEADER_ELECTION`` and ``LEASE_*``; per-node mode (``NODE_NAME``) turns election off."""
        # leaseDurationSeconds is an int32 of whole seconds; a day is far inside it and past any sane use
        duration = env.duration("LEASE_DURATION", minimum=1.0, maximum=DAY)
        renew = env.duration("LEASE_RENEW_DEADLINE", minimum=0.1, maximum=DAY)
        retry = env.duration("LEASE_RETRY_PERIOD", minimum=0.1, maximum=DAY)
        if not duration > renew > retry > 0:
            raise ConfigError(
                "LEASE_DURATION > LEASE_RENEW_DEADLINE > LEASE_RETRY_PERIOD > 0 is required, got "
                f"{env.str('LEASE_DURATION')} / {env.str('LEASE_RENEW_DEADLINE')} / "
                f"{env.str('LEASE_RETRY_PERIOD')}"
            )
        name = env.str("LEASE_NAME")
        if not name:
            raise ConfigError("LEASE_NAME must not be empty")
        return cls(
            enabled=env.bool("LEADER_ELECTION") and not node_name,
            namespace=env.str("LEASE_NAMESPACE") or env.str("POD_NAMESPACE") or DEFAULT_NAMESPACE,
            name=name,
            identity=env.str("POD_NAME") or socket.gethostname(),
            duration=duration,
            renew_deadline=renew,
            retry_period=retry,
        )


class LeaseApi:
    """Get, create and update one Lease; ``None`` answers 404 (get) and 409 (create, update)."""

    def __init__(self, coordination: Any, namespace: str, name: str) -> None:
        self._api = coordination  # kubernetes_asyncio.client.CoordinationV1Api
        self.namespace = namespace
        self.name = name

    async def get(self) -> Lease | None:
        return await self._call("get", self._api.read_namespaced_lease, self.name, self.namespace, absent=404)

    async def create(self, lease: Lease) -> Lease | None:
        return await self._call(
            "create", self._api.create_namespaced_lease, self.namespace, lease, absent=409
        )

    async def update(self, lease: Lease) -> Lease | None:
        """PUT carrying the read resourceVersion: a stale one is a 409, i.e. ``None``."""
        method = self._api.replace_namespaced_lease
        return await self._call("update", method, self.name, self.namespace, lease, absent=409)

    async def _call(self, operation: str, method: Any, *args: Any, absent: int) -> Lease | None:
        what = f"lease {operation} {self.namespace}/{self.name}"
        return await call(method, *args, what=what, absent=(absent,), seconds=REQUEST_SECONDS)


def lease_api(rest: Any, settings: LeaderSettings) -> LeaseApi:
    """The Lease of ``settings`` through the REST ``ApiClient``."""
    return LeaseApi(client.CoordinationV1Api(rest), settings.namespace, settings.name)
