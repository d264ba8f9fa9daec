"""``events.k8s.io/v1`` Events, node capacity and GPU swaps on the simulated cluster, via the real client.

gpuid claims a GPU change by creating its Event; these tests pin down that the
sim validates and answers creates the way the API server does, so what passes
here passes against a cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from gpuid.sim import bundled_capture
from tests.support.app import H100, Sim

BASE: dict[str, Any] = {
    "apiVersion": "events.k8s.io/v1",
    "kind": "Event",
    "metadata": {"name": "gpu-node-1.gpuid-0123456789abcdef", "namespace": "default"},
    "eventTime": "2025-01-02T03:04:05.000000Z",
    "reportingController": "gpuid.io/gpuid",
    "reportingInstance": "gpuid-7d9f-0",
    "action": "Scan",
    "reason": "GPUReplaced",
    "type": "Warning",
    "regarding": {"apiVersion": "v1", "kind": "Node", "name": "gpu-node-1"},
    "note": "GPU replaced",
}


@pytest.fixture
async def api(sim: Sim) -> AsyncIterator[client.ApiClient]:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(sim.kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api_client:
        yield api_client


async def create(api: client.ApiClient, body: dict[str, Any], namespace: str = "default") -> tuple[int, Any]:
    resp = await client.EventsV1Api(api).create_namespaced_event(namespace, body, _preload_content=False)
    return resp.status, await resp.json()


def without(field: str, **changes: Any) -> dict[str, Any]:
    body = {k: v for k, v in BASE.items() if k != field}
    return {**body, **changes}


async def test_a_valid_event_is_created_once_and_can_be_read_and_listed(
    sim: Sim, api: client.ApiClient
) -> None:
    status, stored = await create(api, BASE)
    assert status == 201
    assert stored["metadata"]["uid"]
    assert stored["metadata"]["resourceVersion"]
    assert stored["note"] == "GPU replaced"
    status, again = await create(api, BASE)
    assert (status, again["reason"], again["code"]) == (409, "AlreadyExists", 409)
    events = client.EventsV1Api(api)
    read = await events.read_namespaced_event(BASE["metadata"]["name"], "default", _preload_content=False)
    assert (await read.json())["metadata"]["uid"] == stored["metadata"]["uid"]
    other = without("reason", reason="GPUAdded", metadata={**BASE["metadata"], "name": "gpu-node-1.gpuid-1"})
    assert (await create(api, other))[0] == 201
    listed = await events.list_namespaced_event(
        "default", field_selector="reason=GPUReplaced", _preload_content=False
    )
    assert [e["reason"] for e in (await listed.json())["items"]] == ["GPUReplaced"]
    assert [e["reason"] for e in sim.cluster.events()] == ["GPUReplaced", "GPUAdded"]
    assert [e["reason"] for e in sim.cluster.events(reason="GPUAdded")] == ["GPUAdded"]
    missing = await events.read_namespaced_event("nope", "default", _preload_content=False)
    assert missing.status == 404


@pytest.mark.parametrize(
    ("body", "namespace", "message"),
    [
        (without("eventTime"), "default", "eventTime: Required value"),
        (without("reportingController"), "default", "reportingController: Required value"),
        (
            without("reportingController", reportingController="gpuid io/x y"),
            "default",
            "reportingController: Invalid",
        ),
        (without("reportingInstance"), "default", "reportingInstance: Required value"),
        (without("action"), "default", "action: Required value"),
        (without("reason"), "default", "reason: Required value"),
        (without("type", type="Error"), "default", "type: Invalid value"),
        (without("note", note="x" * 1025), "default", "note: Invalid value"),
        (without("reason", reason="R" * 129), "default", "reason: Invalid value"),
        (without("x", deprecatedCount=3), "default", "deprecatedCount: Invalid value"),
        (without("x", metadata={"namespace": "gpuid", "name": "n.1"}), "gpuid", "involvedObject.namespace"),
        (without("x", metadata={"namespace": "default"}), "default", "metadata.name: Required value"),
        (without("x", metadata={"name": "Not_A_Name"}), "default", "metadata.name: Invalid value"),
    ],
)
async def test_invalid_events_are_refused_like_the_api_server_does(
    sim: Sim, api: client.ApiClient, body: dict[str, Any], namespace: str, message: str
) -> None:
    status, answer = await create(api, body, namespace)
    assert (status, answer["reason"]) == (422, "Invalid")
    assert message in answer["message"]
    assert sim.cluster.events(namespace) == []


async def test_an_event_in_another_namespace_than_the_url_is_a_bad_request(api: client.ApiClient) -> None:
    status, answer = await create(api, BASE, "kube-system")
    assert status == 400
    assert "does not match the namespace" in answer["message"]


async def test_nodes_advertise_their_gpus_and_swaps_change_what_they_answer(sim: Sim) -> None:
    sim.cluster.add_node("n1", capture=H100)
    capacity = sim.cluster.node("n1")["status"]["capacity"]
    assert capacity["nvidia.com/gpu"] == "8"
    assert sim.cluster.node("n1")["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    before = sim.cluster.resource_version
    updated = sim.cluster.update_node(
        "n1", labels={"nvidia.com/gpu.count": "8"}, capacity={"nvidia.com/gpu": "7"}
    )
    assert updated["metadata"]["labels"]["nvidia.com/gpu.count"] == "8"
    assert updated["status"]["capacity"]["nvidia.com/gpu"] == "7"
    assert sim.cluster.resource_version == before + 1  # one MODIFIED event
    uuids = bundled_capture(H100).gpu_uuids()
    sim.cluster.swap_gpu("n1", uuids[2], new_uuid="GPU-new", new_serial="1799")
    swapped = sim.cluster.capture_for_node("n1")
    assert swapped is not None
    assert swapped.gpu_uuids() == [*uuids[:2], "GPU-new", *uuids[3:]]
    assert b"<serial>1799</serial>" in swapped.xml
    sim.cluster.remove_gpu("n1", uuids[0])
    fewer = sim.cluster.capture_for_node("n1")
    assert fewer is not None
    assert fewer.gpu_uuids() == [*uuids[1:2], "GPU-new", *uuids[3:]]
    assert b"<attached_gpus>7</attached_gpus>" in fewer.xml
    with pytest.raises(KeyError):
        sim.cluster.swap_gpu("n1", "GPU-nope", new_uuid="x", new_serial="y")
