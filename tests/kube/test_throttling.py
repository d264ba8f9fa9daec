"""An API server shedding load says when to come back (``Retry-After``): gpuid never comes back sooner.

Against the simulated API server, which answers injected 429s with the
``Retry-After`` a test names. What is asserted is the order of events (no
second request before the advised time has passed), never a speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gpuid.errors import ApiError, ExecError
from gpuid.kube.api import RETRY_AFTER_CAP, call, retry_after
from gpuid.kube.client import KubeClients, connect
from gpuid.kube.informer import Informer
from gpuid.kube.objects import slim_pod
from gpuid.kube.podexec import exec_in_pod
from gpuid.metrics import Metrics
from gpuid.retry import Backoff
from gpuid.smi.commands import XML_COMMAND
from tests.support.app import GB200, Sim, add_gpu_node, eventually


@pytest.fixture
async def kube(sim: Sim) -> AsyncIterator[KubeClients]:
    add_gpu_node(sim, "n1", GB200)
    clients = await connect(str(sim.kubeconfig))
    try:
        yield clients
    finally:
        await clients.close()


async def read_node(kube: KubeClients, seconds: float = 30.0) -> dict[str, Any] | None:
    return await call(kube.core.read_node, "n1", what="get node n1", seconds=seconds)


def test_retry_after_is_read_from_429_and_5xx_only_and_capped() -> None:
    assert retry_after(429, {"Retry-After": "3"}) == 3
    assert retry_after(503, {"Retry-After": "2"}) == 2
    assert retry_after(429, {"Retry-After": "86400"}) == RETRY_AFTER_CAP
    assert retry_after(404, {"Retry-After": "3"}) is None
    assert retry_after(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after(429, {}) is None


async def test_call_waits_out_retry_after_then_succeeds(sim: Sim, kube: KubeClients) -> None:
    sim.cluster.fail_requests(1, status=429, path_contains="/nodes/n1", retry_after=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    node = await read_node(kube)
    assert node is not None
    assert node["metadata"]["name"] == "n1"
    assert loop.time() - started >= 1.0  # not asked again before the server said
    assert sim.cluster.request_counts["get node"] == 2


async def test_call_gives_up_with_the_advice_when_the_wait_would_pass_its_deadline(
    sim: Sim, kube: KubeClients
) -> None:
    sim.cluster.fail_requests(1, status=429, path_contains="/nodes/n1", retry_after=5)
    with pytest.raises(ApiError) as caught:
        await read_node(kube, seconds=2.0)
    assert caught.value.transient
    assert caught.value.status == 429
    assert caught.value.retry_after == 5
    assert sim.cluster.request_counts["get node"] == 1


async def test_an_error_without_advice_is_not_waited_on_by_call(sim: Sim, kube: KubeClients) -> None:
    sim.cluster.fail_requests(1, status=503, path_contains="/nodes/n1")  # no Retry-After
    with pytest.raises(ApiError) as caught:
        await read_node(kube)
    assert caught.value.transient
    assert caught.value.retry_after is None


async def exec_xml(kube: KubeClients, timeout: float) -> int:
    done = await exec_in_pod(
        kube.core_ws, namespace="gpu-operator", pod="dp-n1", container="nvidia-device-plugin",
        command=XML_COMMAND, timeout=timeout, max_bytes=1 << 20,
    )  # fmt: skip
    return done.exit_code


async def test_exec_refused_with_429_is_asked_again_after_retry_after(sim: Sim, kube: KubeClients) -> None:
    sim.cluster.fail_requests(1, status=429, path_contains="/exec", retry_after=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await exec_xml(kube, timeout=10) == 0
    assert loop.time() - started >= 1.0
    assert sim.cluster.request_counts["exec"] == 2


async def test_exec_throttled_past_its_deadline_fails_transient_with_the_advice(
    sim: Sim, kube: KubeClients
) -> None:
    sim.cluster.fail_requests(1, status=429, path_contains="/exec", retry_after=5)
    with pytest.raises(ExecError) as caught:
        await exec_xml(kube, timeout=2)
    assert caught.value.transient
    assert caught.value.retry_after == 5
    assert "throttled" in str(caught.value)
    assert sim.cluster.request_counts["exec"] == 1


async def test_watch_reconnects_no_sooner_than_retry_after(sim: Sim, kube: KubeClients) -> None:
    sim.cluster.fail_requests(1, status=429, path_contains="/pods", retry_after=1)
    informer = Informer(
        "pod", kube.core.list_namespaced_pod, slim_pod, lambda kind, pod: None, Metrics(),
        backoff=Backoff(base=0.01, cap=0.01),  # on its own it would be back within 10 ms
        namespace="gpu-operator",
    )  # fmt: skip
    task = asyncio.create_task(informer.run(), name="informer-under-test")
    try:
        await asyncio.sleep(0.6)
        assert sim.cluster.request_counts["list pods"] == 1  # only the throttled one so far
        await eventually(informer.synced.is_set, timeout=10, what="the list after Retry-After")
    finally:
        task.cancel()
        await asyncio.wait([task])
