"""Node PATCH on the simulated API server, through the real kubernetes_asyncio client.

gpuid writes node labels (and annotations) with ``CoreV1Api.patch_node``; these
tests pin down that the sim answers it the way the API server does, so code
tested against the sim behaves the same against a cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.app import Sim

NODE = "gpu-node-1"


@pytest.fixture
async def v1(sim: Sim) -> AsyncIterator[client.CoreV1Api]:
    sim.cluster.add_node(NODE, labels={"team": "ml"})
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(sim.kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        yield client.CoreV1Api(api)


async def raw_patch(v1: client.CoreV1Api, body: Any, content_type: str | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"_preload_content": False}
    if content_type:
        kwargs["_content_type"] = content_type
    resp = await v1.patch_node(NODE, body, **kwargs)
    result: dict[str, Any] = await resp.json()
    return result


async def test_patch_node_sets_and_deletes_labels_and_annotations(sim: Sim, v1: client.CoreV1Api) -> None:
    before = sim.cluster.resource_version
    node = await v1.patch_node(
        NODE, {"metadata": {"labels": {"gpuid.io/gpu-0": "1652923034028"}, "annotations": {"a": "1"}}}
    )
    assert node.metadata.labels["gpuid.io/gpu-0"] == "1652923034028"
    assert node.metadata.labels["team"] == "ml"  # merged, not replaced
    assert node.metadata.annotations == {"a": "1"}
    assert int(node.metadata.resource_version) == before + 1
    node = await v1.patch_node(NODE, {"metadata": {"labels": {"team": None}}})
    assert "team" not in node.metadata.labels
    assert "team" not in sim.cluster.node(NODE)["metadata"]["labels"]
    assert sim.cluster.request_counts["patch node"] == 2


async def test_patch_node_emits_a_modified_watch_event(sim: Sim, v1: client.CoreV1Api) -> None:
    rv = str(sim.cluster.resource_version)
    events: list[tuple[str, dict[str, str]]] = []

    async def watch_nodes() -> None:
        async with watch.Watch() as w:
            stream = w.stream(v1.list_node, resource_version=rv, timeout_seconds=5)
            async for event in stream:
                events.append((event["type"], event["object"].metadata.labels))
                return

    task = asyncio.create_task(watch_nodes(), name="node-watch")
    await asyncio.sleep(0.1)
    await v1.patch_node(NODE, {"metadata": {"labels": {"gpuid.io/chassis": "na"}}})
    await asyncio.wait_for(task, 5)
    assert events == [("MODIFIED", {**sim.cluster.node(NODE)["metadata"]["labels"]})]
    assert events[0][1]["gpuid.io/chassis"] == "na"


async def test_patch_node_sends_strategic_merge_and_accepts_merge_patch(
    sim: Sim, v1: client.CoreV1Api
) -> None:
    # A list in a strategic merge patch is refused by the sim, which proves which type the client sent.
    with pytest.raises(ApiException) as info:
        await v1.patch_node(NODE, {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}})
    assert info.value.status == 400
    assert "strategic merge of lists" in info.value.body
    # The same body as a JSON merge patch replaces the list.
    node = await raw_patch(
        v1, {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}, "application/merge-patch+json"
    )
    assert node["spec"]["taints"] == [{"key": "k", "effect": "NoSchedule"}]
    with pytest.raises(ApiException) as info:  # JSON patch (a list body) is not simulated
        await v1.patch_node(NODE, [{"op": "add", "path": "/metadata/labels/x", "value": "y"}])
    assert info.value.status == 415


async def test_noop_patch_does_not_write(sim: Sim, v1: client.CoreV1Api) -> None:
    rv = sim.cluster.resource_version
    node = await v1.patch_node(NODE, {"metadata": {"labels": {"team": "ml"}}})
    assert sim.cluster.resource_version == rv
    assert node.metadata.resource_version == str(rv)
    assert sim.cluster.request_counts["patch node"] == 1


async def test_patch_missing_node_is_a_404_status(sim: Sim, v1: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as info:
        await v1.patch_node("no-such-node", {"metadata": {"labels": {"a": "b"}}})
    assert info.value.status == 404
    assert '"reason":"NotFound"' in info.value.body


async def test_stale_resource_version_is_a_conflict(sim: Sim, v1: client.CoreV1Api) -> None:
    rv = sim.cluster.node(NODE)["metadata"]["resourceVersion"]
    await v1.patch_node(NODE, {"metadata": {"labels": {"a": "1"}}})
    with pytest.raises(ApiException) as info:
        await v1.patch_node(NODE, {"metadata": {"resourceVersion": rv, "labels": {"a": "2"}}})
    assert info.value.status == 409
    assert '"reason":"Conflict"' in info.value.body
    assert sim.cluster.node(NODE)["metadata"]["labels"]["a"] == "1"


@pytest.mark.parametrize(
    "labels",
    [{"gpuid.io/gpu-0": "bad value"}, {"gpuid.io/gpu-0": "x" * 64}, {"Bad_Prefix/k": "v"}, {"-k": "v"}],
)
async def test_invalid_labels_are_refused(sim: Sim, v1: client.CoreV1Api, labels: dict[str, str]) -> None:
    rv = sim.cluster.resource_version
    with pytest.raises(ApiException) as info:
        await v1.patch_node(NODE, {"metadata": {"labels": labels}})
    assert info.value.status == 422
    assert '"reason":"Invalid"' in info.value.body
    assert sim.cluster.resource_version == rv


async def test_injected_forbidden_and_invalid(sim: Sim, v1: client.CoreV1Api) -> None:
    sim.cluster.fail_requests(1, 403, path_contains=f"/nodes/{NODE}")
    sim.cluster.fail_requests(1, 422, path_contains=f"/nodes/{NODE}")
    statuses = []
    for _ in range(3):
        try:
            await v1.patch_node(NODE, {"metadata": {"labels": {"a": "b"}}})
            statuses.append(200)
        except ApiException as e:
            statuses.append(e.status)
    assert statuses == [403, 422, 200]
    assert sim.cluster.request_counts["patch node"] == 3
