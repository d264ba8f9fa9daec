"""Leader election on a ``coordination.k8s.io/v1`` Lease: two replicas never scan at once.

The algorithm is client-go's. A replica takes the Lease when it does not
exist, is released (no holder), or has not changed for the holder's
``leaseDurationSeconds`` as measured on *this* replica's clock (so clock skew
between machines does not matter); the API server's resourceVersion check
(409 Conflict) makes exactly one of several racing replicas win. The leader
renews every retry period. If it could not renew for ``LEASE_RENEW_DEADLINE``
(counted from when its last successful renewal was *sent*) it stops leading
— and the caller stops scanning — while a follower still has to wait at least
``LEASE_DURATION`` after it *saw* that renewal: the gap between the two is
the safety margin. Work started in a term checks ``holds(term)`` before it
publishes anything, so a replica that was frozen past its deadline and wakes
up with results in hand discards them. On shutdown the leader releases the Lease so a follower
takes over within one retry period. Annotations supplied by the caller (the
scan checkpoint) ride along on every write, so a successor learns them free.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from gpuid.errors import ApiError
from gpuid.leader.lease import LeaderSettings, LeaseApi
from gpuid.metrics import Metrics

log = structlog.get_logger("gpuid.leader")
Annotations = Callable[[], Mapping[str, str] | None]
RELEASE_TIMEOUT = 2.0  # seconds: shutdown must fit terminationGracePeriodSeconds; else the Lease expires


def micro_time(now: datetime | None = None) -> str:
    """A Kubernetes ``MicroTime``: RFC 3339 UTC with microseconds."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquire, hold and release one Lease for one identity."""

    def __init__(
        self, settings: LeaderSettings, api: LeaseApi, metrics: Metrics, annotations: Annotations
    ) -> None:
        self.settings = settings
        self._api = api
        self._metrics = metrics
        self._annotations = annotations
        self.is_leader = False
        self.term = 0  # bumped each time this replica becomes the leader
        self._tried = False  # an acquire was attempted: the Lease may name us even if we never heard back
        self.holder = ""  # the holder this replica last saw
        self.inherited: dict[str, str] = {}  # the Lease's annotations when this replica took it
        self._observed_rv = ""
        self._observed_at = 0.0  # monotonic time the Lease was last seen to change
        self._renewed_at = 0.0  # monotonic time the last successful write was sent
        metrics.leader.set(0)

    # -- the public loop pieces -------------------------------------------------------------------
    async def acquire(self) -> None:
        """Return once this replica holds the Lease (retrying every retry period)."""
        s = self.settings
        log.info("waiting to become the leader", lease=f"{s.namespace}/{s.name}", identity=s.identity)
        self._tried = True
        while True:
            if await self._attempt(s.retry_period):
                break
            # client-go's jitter: replicas that started together do not keep colliding
            await asyncio.sleep(s.retry_period * random.uniform(1.0, 1.2))  # noqa: S311 - not crypto
        self.is_leader = True
        self.term += 1
        self._metrics.leader.set(1)
        self._metrics.leader_transitions.labels("acquired").inc()
        log.info("became the leader", lease=f"{s.namespace}/{s.name}", identity=s.identity)

    async def hold(self) -> None:
        """Renew every retry period; return when leadership is lost (the caller must stop scanning)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, min(self.settings.retry_period, self._deadline_left())))
            left = self._deadline_left()
            if left > 0 and await self._attempt(left):
                continue
            if self._lost():
                break
        self.is_leader = False
        self._metrics.leader.set(0)
        self._metrics.leader_transitions.labels("lost").inc()
        log.error(
            "lost the leader lease; stopped scanning",
            identity=self.settings.identity,
            holder=self.holder or None,
            since_last_renewal=round(loop.time() - self._renewed_at, 2),
        )

    async def release(self) -> None:
        """Give the Lease up (no holder, 1 s duration) so a follower takes over at once.

        Also when ``acquire`` was cancelled after its write reached the server: the Lease is
        released whenever it names this replica, so a follower never waits for it to expire.
        """
        if not (self.is_leader or self._tried):
            return
        self.is_leader = False
        self._metrics.leader.set(0)
        try:
            async with asyncio.timeout(min(RELEASE_TIMEOUT, self.settings.renew_deadline)):
                lease = await self._api.get()
                if lease is None or _spec(lease).get("holderIdentity") != self.settings.identity:
                    return
                spec = _spec(lease)
                now = micro_time()
                spec.update(holderIdentity="", leaseDurationSeconds=1, acquireTime=now, renewTime=now)
                self._annotate(lease)
                await self._api.update(lease)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
            self._metrics.lease_errors.labels("release").inc()
            log.warning(
                "could not release the leader lease; it will expire", error=str(e) or type(e).__name__
            )
            return
        self._metrics.leader_transitions.labels("released").inc()
        log.info("released the leader lease", identity=self.settings.identity)

    def holds(self, term: int) -> bool:
        """Whether ``term`` is still this replica's, by the clock and not only by ``hold``'s last look.

        A process frozen (SIGSTOP, a stalled VM) past its renew deadline may run a finished
        scan before ``hold`` wakes up to notice the Lease is gone: the deadline itself says so.
        """
        return self.is_leader and self.term == term and self._deadline_left() > 0

    def term_guard(self) -> Callable[[], bool]:
        """A check that the current term is still held, for work started in it."""
        term = self.term
        return lambda: self.holds(term)

    # -- one try, client-go's tryAcquireOrRenew ---------------------------------------------------
    def _deadline_left(self) -> float:
        return self._renewed_at + self.settings.renew_deadline - asyncio.get_running_loop().time()

    def _lost(self) -> bool:
        """After a failed renewal: someone else holds the Lease, or the renew deadline has passed."""
        taken = bool(self.holder) and self.holder != self.settings.identity
        return taken or self._deadline_left() <= 0

    async def _attempt(self, budget: float) -> bool:
        """Try to acquire or renew within ``budget`` seconds; False on any failure (counted, logged)."""
        sent = asyncio.get_running_loop().time()
        operation = "renew" if self.is_leader else "acquire"
        try:
            async with asyncio.timeout(budget):
                won = await self._try()
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            self._metrics.lease_errors.labels(operation).inc()
            log.warning("leader lease request failed", operation=operation, error=str(e) or type(e).__name__)
            return False
        if won:
            self._renewed_at = sent  # the earliest the server can have committed it: the safe side
        return won

    async def _try(self) -> bool:
        s = self.settings
        lease = await self._api.get()
        if lease is None:
            lease = {"metadata": {"name": s.name, "namespace": s.namespace}, "spec": {}}
            self._claim(lease, acquire=True, transitions=0)
            created = await self._api.create(lease)
            if created is None:  # another replica created it first
                return False
            self.inherited = {}
            self._observe(created)
            return True
        self._observe(lease)
        spec = _spec(lease)
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or s.duration)
        now = asyncio.get_running_loop().time()
        if holder and holder != s.identity and self._observed_at + duration > now:
            return False
        acquire = holder != s.identity
        if not self.is_leader:  # also after a restart under the same identity
            self.inherited = dict(lease["metadata"].get("annotations") or {})
        transitions = int(spec.get("leaseTransitions") or 0) + (1 if acquire else 0)
        self._claim(lease, acquire=acquire, transitions=transitions)
        updated = await self._api.update(lease)
        if updated is None:  # 409: the Lease changed since we read it; someone else won
            return False
        self._observe(updated)
        return True

    def _claim(self, lease: dict[str, Any], *, acquire: bool, transitions: int) -> None:
        now = micro_time()
        spec = _spec(lease)
        if acquire:
            spec["acquireTime"] = now
        spec.update(
            holderIdentity=self.settings.identity,
            leaseDurationSeconds=math.ceil(self.settings.duration),
            renewTime=now,
            leaseTransitions=transitions,
        )
        self._annotate(lease)

    def _annotate(self, lease: dict[str, Any]) -> None:
        """Add the caller's annotations (None: it has nothing new, keep what the Lease carries)."""
        extra = self._annotations()
        if extra:
            meta = lease["metadata"]
            meta["annotations"] = {**(meta.get("annotations") or {}), **extra}

    def _observe(self, lease: dict[str, Any]) -> None:
        """Note who holds the Lease; restart the expiry clock when it changed (on this clock)."""
        rv = str(lease["metadata"].get("resourceVersion") or "")
        self.holder = str(_spec(lease).get("holderIdentity") or "")
        if rv != self._observed_rv:
            self._observed_rv, self._observed_at = rv, asyncio.get_running_loop().time()


def _spec(lease: dict[str, Any]) -> dict[str, Any]:
    spec = lease.get("spec")
    if not isinstance(spec, dict):
        spec = lease["spec"] = {}
    return spec
