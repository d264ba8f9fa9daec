"""Watches survive an API server that answers with the wrong shape, refuses nodes, or lists slowly.

Wrong-shape answers come from a stand-in server (the simulated one only
speaks correct JSON); pagination, 403 on nodes and expired continue tokens
run against the simulated API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gpuid.kube import informer as informer_module
from gpuid.kube import nodes as nodes_module
from gpuid.kube.client import connect
from gpuid.kube.informer import Informer
from gpuid.kube.objects import NodeInfo, PodInfo, slim_node, slim_pod
from gpuid.metrics import Metrics
from tests.kube.test_informer import informer_against
from tests.support.app import GB200, Sim, add_gpu_node, eventually, running_app, sample
from tests.support.services import serving

WRONG_SHAPES: list[Any] = [
    None,
    [],
    "pod",
    7,
    {"metadata": "x"},
    {"metadata": {"uid": 5, "name": [], "annotations": "a", "resourceVersion": {}}},
    {"metadata": {"uid": "u"}, "spec": [], "status": "Running"},
    {"metadata": {"uid": "u"}, "spec": {"containers": "c", "nodeName": 3}},
    {"metadata": {"uid": "u"}, "spec": {"containers": [1, None, {"name": 2}]}},
    {"status": {"phase": "Running", "containerStatuses": [1, "a", {"ready": "yes", "restartCount": "9"}]}},
    {"status": {"containerStatuses": [{"ready": True, "restartCount": 10**30}]}},
    {"metadata": {"labels": [], "annotations": {"k": 1}}, "spec": {"providerID": ["aws"]}},
]


@pytest.mark.parametrize("obj", WRONG_SHAPES, ids=repr)
def test_slim_readers_take_any_json_shape(obj: Any) -> None:
    pod = slim_pod(obj)
    assert isinstance(pod, PodInfo)
    assert not pod.ready
    assert 0 <= pod.restarts < 2**31
    node = slim_node(obj, label_prefix="gpuid.io", annotation_keys=("k",))
    assert isinstance(node, NodeInfo)
    assert all(isinstance(v, str) for _, v in node.annotations)


GOOD_POD = {
    "metadata": {"uid": "u-good", "name": "good", "namespace": "ns", "resourceVersion": "9"},
    "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
    "status": {"phase": "Running", "containerStatuses": [{"ready": True, "restartCount": 0}]},
}
HOSTILE_EVENTS: list[bytes] = [
    b'{"type":"ADDED","object":[]}',
    b'{"type":"ADDED","object":[1]}',
    b"[1,2]",
    b'"ADDED"',
    b'{"type":"ADDED","object":{"metadata":"x"}}',
    b'{"type":"MODIFIED","object":{"metadata":{"uid":7}}}',
    b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":12}}}',
    b'{"type":"WHATEVER","object":{"metadata":{"uid":"x"}}}',
    b'{"type":["ADDED"],"object":{"metadata":{"uid":"x"}}}',
    b'{"type":"ADDED","object":{"metadata":{"uid":"u-bad","name":{}},"spec":"x","status":[]}}',
    b'{"type":"ADDED","object":{"metadata":{"uid":"u-second","name":"second"}}}',
    json.dumps({"type": "ADDED", "object": GOOD_POD}).encode(),
]


class HostileApiServer:
    """Lists what it is told to (one answer per list); every watch streams ``events`` then stays open."""

    def __init__(self, lists: list[Any], events: list[bytes]) -> None:
        self.lists = lists
        self.events = events
        self.list_calls = 0
        self.closing = asyncio.Event()

    async def pods(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") not in ("True", "true", "1"):
            answer = self.lists[min(self.list_calls, len(self.lists) - 1)]
            self.list_calls += 1
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for line in self.events:
            await resp.write(line + b"\n")
        await self.closing.wait()  # the watch stays open until the test ends
        return resp


@contextlib.asynccontextmanager
async def informing(
    server: HostileApiServer, tmp_path: Path, events: list[tuple[str, Any]]
) -> AsyncIterator[tuple[Informer, Metrics]]:
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/pods", server.pods)
    async with serving(app) as url:
        informer, metrics, clients = await informer_against(url, tmp_path)
        informer._on_event = lambda kind, pod: events.append((kind, pod))
        task = asyncio.create_task(informer.run(), name="hostile-informer")
        try:
            yield informer, metrics
        finally:
            server.closing.set()
            task.cancel()
            await asyncio.wait([task])
            await clients.close()
    assert task.cancelled()  # by us: it never ended with an error of its own


def logged(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


async def test_wrong_shape_watch_events_are_skipped_and_logged_once_per_problem(
    tmp_path: Path, log_output: io.StringIO
) -> None:
    empty = {"kind": "PodList", "metadata": {"resourceVersion": "5"}, "items": []}
    server = HostileApiServer([empty], HOSTILE_EVENTS * 2)  # every problem twice
    events: list[tuple[str, Any]] = []
    async with informing(server, tmp_path, events):
        await eventually(lambda: len(events) >= 6, timeout=5, what="the readable events, twice")
    names = [(kind, pod.name) for kind, pod in events]
    assert names == [("ADDED", ""), ("ADDED", "second"), ("ADDED", "good")] * 2  # uid u-bad: fields absent
    problems = [line["problem"] for line in logged(log_output) if line["event"].startswith("malformed")]
    assert sorted(problems) == sorted(set(problems))  # once per kind of problem
    assert set(problems) == {
        "watch event object is not an object",
        "watch event is not an object",
        "watch event without metadata",
        "unexpected watch event",
    }
    assert server.list_calls == 1  # skipped, not a reason to re-list


@pytest.mark.parametrize(
    "bad_list",
    [
        {"metadata": {"resourceVersion": "5"}, "items": {"a": 1}},
        {"metadata": {}, "items": []},
        {"metadata": "x", "items": []},
        {"metadata": {"resourceVersion": 5}, "items": []},
        [],
        "PodList",
        {"metadata": {"resourceVersion": "5", "continue": 3}, "items": []},
    ],
    ids=repr,
)
async def test_a_wrong_shape_list_is_asked_for_again(
    bad_list: Any, tmp_path: Path, log_output: io.StringIO
) -> None:
    good = {"metadata": {"resourceVersion": "5"}, "items": [GOOD_POD, {"metadata": {"name": "no-uid"}}]}
    server = HostileApiServer([bad_list, good], [])
    events: list[tuple[str, Any]] = []
    async with informing(server, tmp_path, events) as (informer, metrics):
        await informer.synced.wait()
    assert [(kind, pod.name) for kind, pod in events] == [("ADDED", "good")]
    assert server.list_calls == 2
    assert metrics.registry.get_sample_value("gpuid_watch_restarts_total", {"reason": "error"}) == 1
    problems = {line.get("problem") for line in logged(log_output)}
    assert "list item without metadata.uid" in problems


# -- pagination against the simulated API server ------------------------------------------------------
class CountingList:
    """The real ``list_namespaced_pod``, with a note of each call's continue token."""

    def __init__(self, method: Any) -> None:
        self._method = method
        self.tokens: list[str] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("watch"):
            self.tokens.append(kwargs.get("_continue", ""))
        return await self._method(*args, **kwargs)


@contextlib.asynccontextmanager
async def paged_informer(
    sim: Sim, pods: int
) -> AsyncIterator[tuple[Informer, Metrics, CountingList, list[str]]]:
    for i in range(pods):
        sim.cluster.add_pod(f"p{i:03d}", node="n")
    clients = await connect(str(sim.kubeconfig))
    seen: list[str] = []  # pods announced as ADDED: each exactly once, however the list went
    counting = CountingList(clients.core.list_namespaced_pod)
    metrics = Metrics()

    def on_event(kind: str, pod: PodInfo) -> None:
        if kind == "ADDED":
            seen.append(pod.name)
        assert kind != "DELETED", pod.name

    informer = Informer("pod", counting, slim_pod, on_event, metrics, namespace="gpu-operator")
    task = asyncio.create_task(informer.run(), name="paged-informer")
    try:
        yield informer, metrics, counting, seen
    finally:
        task.cancel()
        await asyncio.wait([task])
        await clients.close()


async def test_lists_are_paginated(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer_module, "LIST_PAGE", 10)
    async with paged_informer(sim, 25) as (informer, _, counting, seen):
        await asyncio.wait_for(informer.synced.wait(), 10)
        assert sorted(seen) == [f"p{i:03d}" for i in range(25)]
        assert len(counting.tokens) == 3
        assert counting.tokens[0] == ""
        assert all(counting.tokens[1:])


async def test_a_page_that_fails_is_asked_for_again_without_starting_over(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(informer_module, "LIST_PAGE", 10)
    sim.cluster.fail_requests(2, status=503, path_contains="continue=")
    async with paged_informer(sim, 25) as (informer, metrics, counting, seen):
        await asyncio.wait_for(informer.synced.wait(), 15)
        assert sorted(seen) == [f"p{i:03d}" for i in range(25)]
        assert counting.tokens.count("") == 1  # the first page was never fetched again
        assert len(counting.tokens) == 5  # 3 pages, the second asked for 3 times
        assert sample(metrics, "gpuid_watch_restarts_total", reason="error") == 2


async def test_an_expired_continue_token_starts_the_list_over(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(informer_module, "LIST_PAGE", 10)
    sim.cluster.fail_requests(1, status=410, path_contains="continue=")
    async with paged_informer(sim, 25) as (informer, metrics, counting, seen):
        await asyncio.wait_for(informer.synced.wait(), 15)
        assert sorted(seen) == [f"p{i:03d}" for i in range(25)]
        assert counting.tokens.count("") == 2  # started over once
        assert sample(metrics, "gpuid_watch_restarts_total", reason="expired") == 1


# -- a node watch the API server refuses ---------------------------------------------------------------
@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_node_watch_is_retried_later_and_machines_come_back(
    sim: Sim, status: int, monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    monkeypatch.setattr(nodes_module, "DENIED_RETRY_SECONDS", 1.0)
    add_gpu_node(sim, "n1", GB200)
    sim.cluster.fail_requests(1, status=status, path_contains="/api/v1/nodes")
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 4, what="n1 scanned while nodes are refused")
        assert {r.machine for r in run.memory.records} == {None}
        assert run.sample("gpuid_watch_restarts_total", reason="denied") == 1
        await eventually(lambda: "watch allowed again" in log_output.getvalue(), what="nodes readable again")
        add_gpu_node(sim, "n2", GB200)
        await eventually(lambda: len(run.uuids("dp-n2")) == 4, what="n2 scanned after nodes came back")
        machines = {r.machine for r in run.memory.records if r.node == "n2"}
        assert machines == {sim.cluster.node("n2")["spec"]["providerID"].rsplit("/", 1)[-1]}
        ready, why = run.app.readiness()
        assert ready, why
    lines = logged(log_output)
    refused = [line for line in lines if line["event"] == "watch refused; retrying later"]
    assert len(refused) == 1
    assert (refused[0]["kind"], refused[0]["status"], refused[0]["level"]) == ("node", status, "error")
    assert any(line["event"] == "watch allowed again" for line in lines)
