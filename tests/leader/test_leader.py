"""Leader election: two gpuid replicas against one simulated cluster never scan at once.

Replicas run in-process (real App, real client, real Lease API on the sim),
except where a leader must die without a chance to clean up: that one is a
real ``python -m gpuid`` process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from gpuid.config import load_settings
from gpuid.delivery.lane import Tally
from gpuid.errors import ConfigError
from gpuid.kube.client import connect
from gpuid.kube.objects import PodInfo
from gpuid.leader.elector import LeaderElector
from gpuid.leader.lease import LeaderSettings, Lease, LeaseApi
from gpuid.metrics import Metrics
from gpuid.scan.handover import CHECKPOINT_KEY, SCOPE_KEY, ScanProgress
from tests.support.app import ELECTION, Running, Sim, eventually, running_app


def add_pods(sim: Sim, count: int, *, delay: float = 0.0, hang: bool = False) -> list[str]:
    names = []
    for i in range(count):
        node, pod = f"n{i:03d}", f"dp-n{i:03d}"
        sim.cluster.add_node(node)
        sim.cluster.add_pod(pod, node=node)
        if delay or hang:
            sim.cluster.set_exec(pod, delay=delay, hang=hang)
        names.append(pod)
    return names


def scanned_pods(run: Running) -> Counter[str]:
    """Pod name -> how many times its 8 H100 records were exported by this replica."""
    per_pod = Counter(r.source.split("/", 1)[1] for r in run.memory.records)
    return Counter({pod: n // 8 for pod, n in per_pod.items()})


@contextlib.asynccontextmanager
async def never_together(*runs: Running) -> AsyncIterator[list[str]]:
    """Sample the replicas every few ms; yields the list of moments two of them led or scanned at once."""
    clashes: list[str] = []

    async def sample() -> None:
        while True:
            leading = [r for r in runs if r.app.elector is not None and r.app.elector.is_leader]
            scanning = [r for r in runs if r.app.scanner is not None and r.app.scanner.in_flight]
            if len(leading) > 1 or len(scanning) > 1:
                clashes.append(f"leading={len(leading)} scanning={len(scanning)}")
            await asyncio.sleep(0.003)

    task = asyncio.create_task(sample(), name="clash-sampler")
    try:
        yield clashes
    finally:
        task.cancel()
        await asyncio.wait([task])


# -- the Lease API of the simulated server ------------------------------------------------------
async def test_sim_leases_have_optimistic_concurrency(sim: Sim) -> None:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(sim.kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        leases = client.CoordinationV1Api(api)
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name="gpuid"),
            spec=client.V1LeaseSpec(
                holder_identity="a", lease_duration_seconds=15, renew_time=datetime.now(UTC)
            ),
        )
        created = await leases.create_namespaced_lease("gpuid", body)
        assert created.spec.holder_identity == "a"
        with pytest.raises(ApiException) as info:
            await leases.create_namespaced_lease("gpuid", body)
        assert (info.value.status, json.loads(info.value.body)["reason"]) == (409, "AlreadyExists")
        current = await leases.read_namespaced_lease("gpuid", "gpuid")
        current.spec.holder_identity = "b"
        updated = await leases.replace_namespaced_lease("gpuid", "gpuid", current)
        assert int(updated.metadata.resource_version) > int(current.metadata.resource_version)
        current.spec.holder_identity = "c"  # still carries the old resourceVersion
        with pytest.raises(ApiException) as info:
            await leases.replace_namespaced_lease("gpuid", "gpuid", current)
        assert (info.value.status, json.loads(info.value.body)["reason"]) == (409, "Conflict")
        current.spec.lease_duration_seconds = 0
        current.metadata.resource_version = updated.metadata.resource_version
        with pytest.raises(ApiException) as info:
            await leases.replace_namespaced_lease("gpuid", "gpuid", current)
        assert info.value.status == 422
        await leases.delete_namespaced_lease("gpuid", "gpuid")
        with pytest.raises(ApiException) as info:
            await leases.read_namespaced_lease("gpuid", "gpuid")
        assert info.value.status == 404
    counts = sim.cluster.request_counts
    assert (counts["create lease"], counts["update lease"], counts["get lease"]) == (2, 3, 2)
    assert counts["delete lease"] == 1


# -- the scan checkpoint -------------------------------------------------------------------------
def pod(uid: str, rv: int, *, ready: bool = True, restarts: int = 0) -> PodInfo:
    return PodInfo(uid, f"p-{uid}", "ns", "n", ready, restarts, ("c",), None, rv)


def test_checkpoint_stops_below_the_oldest_pod_not_yet_delivered() -> None:
    lane = [Tally(accepted=0, left=0, lost_through=0)]
    progress = ScanProgress("scope", {}, lambda: lane)
    for p in (pod("a", 10), pod("b", 11), pod("c", 12, ready=False)):
        progress.observe("ADDED", p)
    assert progress.annotations() is None  # not synced: vouches for nothing
    progress.synced = True
    assert progress.checkpoint() == 9  # a (rv 10) is due
    lane[0] = Tally(accepted=8, left=0, lost_through=0)
    progress.scanned(pod("a", 10), 8)  # submitted, not yet delivered
    assert progress.checkpoint() == 9
    lane[0] = Tally(accepted=8, left=8, lost_through=0)  # the exporter delivered a's 8 records
    assert progress.checkpoint() == 10  # b (rv 11) is due
    progress.observe("DELETED", pod("b", 13))
    assert progress.annotations() == {CHECKPOINT_KEY: "13", SCOPE_KEY: "scope"}  # nothing due
    progress.observe("MODIFIED", pod("c", 14))  # c becomes ready: due again
    assert progress.checkpoint() == 13


def test_a_successor_trusts_only_a_checkpoint_of_its_own_scope() -> None:
    inherited = {CHECKPOINT_KEY: "20", SCOPE_KEY: "scope"}
    progress = ScanProgress("scope", inherited, list)
    assert progress.already_scanned(pod("a", 20))
    assert not progress.already_scanned(pod("a", 21))
    assert not progress.already_scanned(pod("a", 5, ready=False))
    assert not progress.already_scanned(pod("a", 0))  # rv unknown
    other = ScanProgress("other-scope", inherited, list)
    assert not other.already_scanned(pod("a", 20))


# -- settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"LEASE_DURATION": "10s", "LEASE_RENEW_DEADLINE": "10s"}, "LEASE_RENEW_DEADLINE"),
        ({"LEASE_RENEW_DEADLINE": "2s", "LEASE_RETRY_PERIOD": "3s"}, "LEASE_RETRY_PERIOD"),
        ({"LEASE_RETRY_PERIOD": "0"}, "LEASE_RETRY_PERIOD"),
        ({"LEASE_DURATION": "500ms", "LEASE_RENEW_DEADLINE": "400ms"}, "LEASE_DURATION"),
        ({"LEASE_NAME": " "}, "LEASE_NAME"),
    ],
)
def test_bad_lease_timing_is_a_config_error(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings({"CLUSTER_NAME": "t", **env})


def test_leader_settings_defaults_and_per_node_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"CLUSTER_NAME": "t", "LEADER_ELECTION": "true"}
    s = load_settings({**base, "POD_NAMESPACE": "ops", "POD_NAME": "gpuid-1"}).leader
    assert (s.enabled, s.namespace, s.name, s.identity) == (True, "ops", "gpuid", "gpuid-1")
    assert (s.duration, s.renew_deadline, s.retry_period) == (15.0, 10.0, 2.0)
    monkeypatch.setattr("socket.gethostname", lambda: "host-7")
    s = load_settings(base).leader
    assert (s.namespace, s.identity) == ("gpuid", "host-7")
    assert not load_settings({"CLUSTER_NAME": "t"}).leader.enabled
    assert not load_settings({**base, "NODE_NAME": "n1"}).leader.enabled


async def test_per_node_mode_scans_its_node_without_a_lease(sim: Sim) -> None:
    add_pods(sim, 3)
    async with running_app(sim, NODE_NAME="n001", **ELECTION) as run:
        await eventually(lambda: len(run.memory.records) == 8, what="8 records")
        assert set(scanned_pods(run)) == {"dp-n001"}
        assert run.sample("gpuid_leader") == 1
        assert run.app.readiness() == (True, "ready")
    assert not any("lease" in key for key in sim.cluster.request_counts)


# -- two replicas ----------------------------------------------------------------------------------
async def test_only_the_leader_scans_and_the_follower_stands_by(sim: Sim) -> None:
    pods = add_pods(sim, 30, delay=0.05)
    env = {**ELECTION, "WORKERS": "4"}
    async with (
        running_app(sim, POD_NAME="a", **env) as a,
        running_app(sim, POD_NAME="b", **env) as b,
        never_together(a, b) as clashes,
    ):
        await eventually(lambda: sum(scanned_pods(a).values()) + sum(scanned_pods(b).values()) == 30)
        leader, follower = (a, b) if a.sample("gpuid_leader") else (b, a)
        assert (leader.sample("gpuid_leader"), follower.sample("gpuid_leader")) == (1, 0)
        assert scanned_pods(leader) == Counter(dict.fromkeys(pods, 1))
        assert follower.memory.records == []
        assert follower.sample("gpuid_scans_total", result="success") == 0
        assert follower.app.readiness() == (True, "standing by: another replica is the leader")
        assert sim.cluster.request_counts["exec"] == 30
    assert clashes == []


async def test_a_stopped_leader_hands_over_at_once_without_duplicates(sim: Sim) -> None:
    pods = add_pods(sim, 40, delay=0.1)
    env = {**ELECTION, "WORKERS": "2", "LEASE_DURATION": "20s", "LEASE_RENEW_DEADLINE": "5s"}
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_app(sim, POD_NAME="a", **env))
        await eventually(lambda: a.sample("gpuid_leader") == 1, what="a leads")
        b = await stack.enter_async_context(running_app(sim, POD_NAME="b", **env))
        clashes = await stack.enter_async_context(never_together(a, b))
        await eventually(lambda: len(scanned_pods(a)) >= 10, what="a scanned 10 pods")
        loop = asyncio.get_running_loop()
        a.app.stop()
        assert await a.task == 0
        stopped = loop.time()
        await eventually(lambda: b.sample("gpuid_leader") == 1, what="b leads")
        takeover = loop.time() - stopped
        await eventually(lambda: len(scanned_pods(a)) + len(scanned_pods(b)) == 40, what="every pod")
        assert takeover < 10  # released, not expired: the lease says 20 s
        assert scanned_pods(a) + scanned_pods(b) == Counter(dict.fromkeys(pods, 1))  # no pod twice
        assert b.sample("gpuid_leader_transitions_total", event="acquired") == 1
        assert a.sample("gpuid_leader_transitions_total", event="released") == 1
        assert clashes == []


async def test_a_leader_that_cannot_renew_stops_scanning_before_its_lease_expires(sim: Sim) -> None:
    pods = add_pods(sim, 3, hang=True)
    env = {**ELECTION, "LEASE_DURATION": "4s", "LEASE_RENEW_DEADLINE": "1s", "TIMEOUT": "30s"}
    loop = asyncio.get_running_loop()
    async with running_app(sim, POD_NAME="a", **env) as a:
        await eventually(lambda: sim.server.open_exec_sessions == 3, what="3 scans hanging")
        lease = sim.cluster.current("leases", "gpuid", "gpuid")
        assert lease is not None
        seen_rv, last_write = lease.rv, loop.time()
        sim.cluster.fail_requests(100_000, 500, path_contains="/leases")
        while sim.server.open_exec_sessions:  # the leader gives up and closes its exec streams
            current = sim.cluster.current("leases", "gpuid", "gpuid")
            if current is not None and current.rv != seen_rv:
                seen_rv, last_write = current.rv, loop.time()
            await asyncio.sleep(0.005)
        stopped_after = loop.time() - last_write
        assert a.sample("gpuid_leader") == 0
        assert stopped_after < 4.0  # a follower would wait 4 s after the last write it saw
        assert a.sample("gpuid_leader_transitions_total", event="lost") == 1
        assert a.sample("gpuid_lease_errors_total", operation="renew") >= 1
        assert a.memory.records == []
        sim.cluster.clear_failures()
        for pod in pods:
            sim.cluster.set_exec(pod)
        await eventually(lambda: len(scanned_pods(a)) == 3, what="a scans again after re-acquiring")
        assert a.sample("gpuid_leader") == 1


# -- a leader killed mid-sweep (a real process, SIGKILL) ------------------------------------------
async def test_a_killed_leader_s_follower_finishes_the_sweep_without_rescanning_delivered_pods(
    sim: Sim,
) -> None:
    pods = add_pods(sim, 60, delay=0.1)
    rv_of = {p: int(sim.cluster.pod(p)["metadata"]["resourceVersion"]) for p in pods}
    env = {
        **os.environ,
        **ELECTION,
        "CLUSTER_NAME": "kill",
        "KUBECONFIG": str(sim.kubeconfig),
        "SERVER_PORT": "0",
        "WORKERS": "2",
        "EXPORT_FLUSH_INTERVAL": "0.05",
        "LOG_LEVEL": "warning",
    }
    outputs: dict[str, list[str]] = {"a": [], "b": []}
    procs = {}
    readers = []
    for name in ("a", "b"):
        procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gpuid", env={**env, "POD_NAME": name},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        readers.append(asyncio.create_task(_collect(procs[name], outputs[name]), name=f"read-{name}"))
    try:
        await eventually(lambda: _holder(sim) in ("a", "b"), timeout=30, what="a leader")
        leader = _holder(sim)
        follower = "b" if leader == "a" else "a"
        await eventually(lambda: _checkpoint(sim) >= sorted(rv_of.values())[20], timeout=30, what="progress")
        procs[leader].send_signal(signal.SIGKILL)
        await procs[leader].wait()
        covered = _checkpoint(sim)  # what the dead leader vouched for
        await eventually(lambda: len(_pods(outputs[follower]) | _pods(outputs[leader])) == 60, timeout=30)
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
        await asyncio.wait(readers)
    by_leader, by_follower = _pods(outputs[leader]), _pods(outputs[follower])
    assert by_leader | by_follower == set(pods)  # nothing lost
    assert not {p for p in by_follower if rv_of[p] <= covered}  # delivered and vouched for: not redone
    twice = by_leader & by_follower
    assert all(rv_of[p] > covered for p in twice)  # only what was delivered after the last renewal


async def _collect(proc: asyncio.subprocess.Process, into: list[str]) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        into.append(line.decode())


def _pods(lines: list[str]) -> set[str]:
    return {json.loads(line)["source"].split("/", 1)[1] for line in lines if '"gpu_reading"' in line}


def _holder(sim: Sim) -> str:
    lease = sim.cluster.current("leases", "gpuid", "gpuid")
    return "" if lease is None else str(lease.obj["spec"].get("holderIdentity") or "")


def _checkpoint(sim: Sim) -> int:
    lease = sim.cluster.current("leases", "gpuid", "gpuid")
    annotations = {} if lease is None else lease.obj["metadata"].get("annotations") or {}
    return int(annotations.get(CHECKPOINT_KEY, 0))


class AnswerLostLeaseApi(LeaseApi):
    """The real Lease API, but the answer to a successful write never arrives (a shutdown cancels it)."""

    def __init__(self, coordination: Any, namespace: str, name: str) -> None:
        super().__init__(coordination, namespace, name)
        self.written = asyncio.Event()

    async def create(self, lease: Lease) -> Lease | None:
        await super().create(lease)
        self.written.set()
        await asyncio.Event().wait()
        return None


async def test_a_lease_won_while_shutting_down_is_still_released(sim: Sim) -> None:
    settings = LeaderSettings(enabled=True, namespace="gpuid", name="gpuid", identity="a")
    clients = await connect(str(sim.kubeconfig))
    try:
        api = AnswerLostLeaseApi(client.CoordinationV1Api(clients.rest), "gpuid", "gpuid")
        elector = LeaderElector(settings, api, Metrics(), lambda: None)
        acquiring = asyncio.create_task(elector.acquire())
        await api.written.wait()  # the server now names "a" as the holder...
        acquiring.cancel()  # ...but gpuid is stopping before it heard so
        with contextlib.suppress(asyncio.CancelledError):
            await acquiring
        assert not elector.is_leader
        await elector.release()
        lease = await LeaseApi(client.CoordinationV1Api(clients.rest), "gpuid", "gpuid").get()
    finally:
        await clients.close()
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == ""  # free for a follower at once, not after 15 s
