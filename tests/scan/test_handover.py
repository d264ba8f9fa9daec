"""The scan checkpoint against a real ``Delivery``: a pod whose records were dropped is never vouched for.

Also the start-up and shutdown edges of a scanning term: a session stopped
before it ran, the exporters' close and the Lease release at shutdown.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gpuid.config import load_settings
from gpuid.delivery import delivery as delivery_module
from gpuid.delivery.delivery import Delivery
from gpuid.kube.client import KubeClients
from gpuid.kube.nodes import NodeDirectory
from gpuid.kube.objects import PodInfo
from gpuid.leader import elector as leader_module
from gpuid.leader.elector import LeaderElector
from gpuid.leader.lease import LeaderSettings, LeaseApi
from gpuid.metrics import Metrics
from gpuid.scan.handover import ScanProgress
from gpuid.scan.session import ScanSession, ScanSetup
from gpuid.scan.source import IdentitySource
from tests.delivery.test_delivery import Backend, dropped
from tests.support.app import eventually, sample
from tests.support.records import delivering as running
from tests.support.records import fast_delivery, reading


def pod(uid: str, rv: int) -> PodInfo:
    return PodInfo(uid, f"p-{uid}", "ns", "n", True, 0, ("c",), None, rv)


def progress_for(delivery: Delivery, *pods: PodInfo) -> ScanProgress:
    """A synced checkpoint over ``delivery`` that has seen ``pods`` become ready (so they are due)."""
    progress = ScanProgress("scope", {}, delivery.tallies)
    for p in pods:
        progress.observe("ADDED", p)
    progress.synced = True
    return progress


def scan(progress: ScanProgress, delivery: Delivery, p: PodInfo, first: int, count: int) -> None:
    """What the scanner does after a successful scan: submit the records, then report the scan."""
    readings = [reading(n, pod_uid=p.uid) for n in range(first, first + count)]
    delivery.submit(readings)
    progress.scanned(p, len(readings))


# -- bug A: only delivered records let the checkpoint pass a pod ---------------------------------
async def test_a_pod_whose_records_were_refused_holds_the_checkpoint() -> None:
    backend, metrics = Backend(), Metrics()
    backend.refuse_all = True
    delivery = Delivery([backend], metrics, fast_delivery())
    lost, later = pod("lost", 10), pod("later", 9)
    progress = progress_for(delivery, lost, later)
    async with running(delivery):
        scan(progress, delivery, lost, 0, 4)
        await eventually(lambda: dropped(metrics, "mem", "rejected") == 4)
        assert progress.checkpoint() == 8  # both due
        backend.refuse_all = False
        scan(progress, delivery, later, 4, 4)
        await eventually(lambda: len(backend.records) == 4)
        assert progress.checkpoint() == 9  # "later" is delivered; "lost" never was
        assert progress.checkpoint() == 9  # and it stays so


async def test_records_refused_by_a_full_queue_hold_their_pod_and_not_acknowledge_others() -> None:
    backend = Backend()
    delivery = Delivery([backend], Metrics(), fast_delivery(queue_size=8))
    waiting, refused = pod("waiting", 10), pod("refused", 11)
    progress = progress_for(delivery, waiting, refused)
    scan(progress, delivery, waiting, 0, 8)  # accepted; nothing runs the lane yet
    scan(progress, delivery, refused, 8, 8)  # the queue is full: all refused
    assert progress.checkpoint() == 9  # "waiting" is not delivered just because others were dropped
    async with running(delivery):
        await eventually(lambda: len(backend.records) == 8)
        assert progress.checkpoint() == 10  # "waiting" delivered; "refused" stays due
    assert progress.checkpoint() == 10


async def test_a_partly_refused_pod_holds_the_checkpoint() -> None:
    backend = Backend()
    delivery = Delivery([backend], Metrics(), fast_delivery(queue_size=5))
    partly = pod("partly", 10)
    progress = progress_for(delivery, partly, pod("newest", 12))
    progress.observe("DELETED", pod("newest", 12))  # only "partly" is due
    scan(progress, delivery, partly, 0, 8)  # 5 fit, 3 are refused
    async with running(delivery):
        await eventually(lambda: len(backend.records) == 5)
        assert progress.checkpoint() == 9


async def test_a_pod_whose_spooled_records_were_unreadable_holds_the_checkpoint(tmp_path: Path) -> None:
    backend, metrics = Backend(), Metrics()
    settings = fast_delivery(spool_dir=tmp_path, queue_size=1, batch_size=1)  # one record per segment
    delivery = Delivery([backend], metrics, settings)
    first, second = pod("first", 10), pod("second", 11)
    progress = progress_for(delivery, first, second)
    scan(progress, delivery, first, 0, 1)  # in memory (and on disk)
    scan(progress, delivery, second, 1, 1)  # on disk only
    segments = sorted((tmp_path / "mem").glob("*.jsonl"))
    assert len(segments) == 2
    segments[1].write_text("not json\n")
    async with running(delivery):
        await eventually(lambda: dropped(metrics, "mem", "spool_corrupt") == 1)
        assert len(backend.records) == 1
        checkpoint = progress.checkpoint()
    assert checkpoint is not None
    assert checkpoint < 11  # never past "second"


async def test_a_pod_delivered_by_every_lane_lets_the_checkpoint_pass() -> None:
    fast, slow = Backend("fast"), Backend("slow")
    slow.down = True  # transient: retried until it is back
    delivery = Delivery([fast, slow], Metrics(), fast_delivery())
    p = pod("p", 10)
    progress = progress_for(delivery, p)
    async with running(delivery):
        scan(progress, delivery, p, 0, 3)
        await eventually(lambda: len(fast.records) == 3)
        assert progress.checkpoint() == 9  # one lane still holds them
        slow.down = False
        await eventually(lambda: len(slow.records) == 3)
        assert progress.checkpoint() == 10


# -- bug B: shutdown fits the grace period ----------------------------------------------------------
class BarrierClose(Backend):
    """An exporter whose close finishes only once every exporter has started closing."""

    def __init__(self, name: str, barrier: asyncio.Barrier) -> None:
        super().__init__(name)
        self.barrier = barrier

    async def close(self) -> None:
        await self.barrier.wait()
        self.closed = True


async def test_drain_closes_the_exporters_concurrently() -> None:
    barrier = asyncio.Barrier(2)
    backends = [BarrierClose("a", barrier), BarrierClose("b", barrier)]
    await Delivery(backends, Metrics(), fast_delivery()).drain(1.0)
    assert all(b.closed for b in backends)  # one after another, the first would wait for ever


async def test_a_hanging_close_does_not_hold_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery_module, "CLOSE_TIMEOUT", 0.05)
    hanging, other = BarrierClose("hanging", asyncio.Barrier(2)), Backend("other")
    await Delivery([hanging, other], Metrics(), fast_delivery()).drain(1.0)
    assert other.closed
    assert not hanging.closed


class HangingLeaseApi(LeaseApi):
    def __init__(self) -> None:
        super().__init__(None, "ns", "gpuid")
        self.gave_up = False

    async def get(self) -> dict[str, Any] | None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.gave_up = True
            raise
        return None


async def test_release_gives_up_quickly_and_lets_the_lease_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leader_module, "RELEASE_TIMEOUT", 0.05)
    api, metrics = HangingLeaseApi(), Metrics()
    settings = LeaderSettings(renew_deadline=3600.0, duration=7200.0)  # the old bound: an hour
    elector = LeaderElector(settings, api, metrics, lambda: None)
    elector.is_leader = True
    async with asyncio.timeout(60):  # a safety net: failing beats hanging
        await elector.release()
    assert api.gave_up
    assert sample(metrics, "gpuid_lease_errors_total", operation="release") == 1
    assert not elector.is_leader


# -- bug C: a session stopped before it ran ---------------------------------------------------------
async def test_a_session_stopped_before_it_runs_returns_at_once() -> None:
    listed: list[str] = []

    async def list_forever(*args: Any, **kwargs: Any) -> Any:
        listed.append("list")
        await asyncio.Event().wait()

    metrics = Metrics()
    settings = load_settings({"CLUSTER_NAME": "test"})
    core = SimpleNamespace(list_namespaced_pod=list_forever)
    clients = cast(KubeClients, SimpleNamespace(core=core, core_ws=core))
    setup = ScanSetup(
        watch=settings.watch,
        scan=settings.scan,
        cluster=settings.cluster_name,
        source=IdentitySource(settings.watch.container, settings.drivers, None),
        clients=clients,
        nodes=NodeDirectory(list_forever, metrics),
        delivery=Delivery([], metrics),
        metrics=metrics,
    )
    session = ScanSession(setup)
    await session.stop(1.0)
    async with asyncio.timeout(60):  # a safety net: failing beats hanging
        await session.run()
    assert listed == []  # it never started watching
