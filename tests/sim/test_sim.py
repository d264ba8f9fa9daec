"""The simulated API server, exercised only through the real kubernetes_asyncio client.

If these pass, code that works against the sim speaks the same protocol a real
API server and kubelet do: selectors, resourceVersions, watch events and
bookmarks, 410 after compaction, Status errors, and exec's channel framing.
The leak check (no task left running) is the shared one in conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from gpuid.sim import (
    SimApiServer,
    SimCluster,
    bundled_capture,
    demo_cluster,
    device_plugin_pod_name,
    run_command,
)

NS = "gpu-operator"
DP = "app=nvidia-device-plugin-daemonset"
POD1 = device_plugin_pod_name("gpu-node-1")  # H100 x8
POD3 = device_plugin_pod_name("gpu-node-3")  # A100 MIG
SMI_XML = ["sh", "-c", "nvidia-smi -q -x"]


@dataclass
class SimEnv:
    cluster: SimCluster
    server: SimApiServer
    config: client.Configuration


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[SimEnv]:
    cluster = demo_cluster(3)
    async with SimApiServer(cluster, bookmark_interval=0.1) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        yield SimEnv(cluster, server, cfg)


@pytest.fixture
async def v1(env: SimEnv) -> AsyncIterator[client.CoreV1Api]:
    async with client.ApiClient(env.config) as api:
        yield client.CoreV1Api(api)


@pytest.fixture
async def v1ws(env: SimEnv) -> AsyncIterator[client.CoreV1Api]:
    async with WsApiClient(env.config) as api:
        yield client.CoreV1Api(api)


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    status: bytes
    ready_frames: int


async def run_exec(v1ws: client.CoreV1Api, pod: str, command: list[str], **kwargs: Any) -> ExecResult:
    """Read exec frames the way gpuid must: channel byte first, skip 1-byte ready frames."""
    out, err, status, ready = b"", b"", b"", 0
    kwargs.setdefault("container", "nvidia-device-plugin")
    async with await v1ws.connect_get_namespaced_pod_exec(
        pod,
        NS,
        command=command,
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _preload_content=False,
        **kwargs,
    ) as ws:
        async for msg in ws:
            assert msg.type == aiohttp.WSMsgType.BINARY
            if len(msg.data) <= 1:
                ready += 1
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == 1:
                out += data
            elif channel == 2:
                err += data
            elif channel == 3:
                status += data
    return ExecResult(out, err, status, ready)


# -- list / get -----------------------------------------------------------------------------------
async def test_list_applies_label_and_field_selectors(env: SimEnv, v1: client.CoreV1Api) -> None:
    env.cluster.add_pod(
        "driver-1", node="gpu-node-1", labels={"app.kubernetes.io/component": "nvidia-driver"}
    )
    env.cluster.add_pod("other-ns", node="gpu-node-1", namespace="default")

    by_label = await v1.list_namespaced_pod(NS, label_selector=DP)
    assert sorted(p.metadata.name for p in by_label.items) == sorted(
        device_plugin_pod_name(f"gpu-node-{i}") for i in (1, 2, 3)
    )
    on_node = await v1.list_namespaced_pod(NS, label_selector=DP, field_selector="spec.nodeName=gpu-node-1")
    assert [p.metadata.name for p in on_node.items] == [POD1]
    assert on_node.items[0].spec.node_name == "gpu-node-1"
    assert on_node.items[0].status.container_statuses[0].ready is True
    by_name = await v1.list_namespaced_pod(NS, field_selector="metadata.name=driver-1")
    assert [p.metadata.name for p in by_name.items] == ["driver-1"]
    not_dp = await v1.list_namespaced_pod(NS, label_selector="app!=nvidia-device-plugin-daemonset")
    assert [p.metadata.name for p in not_dp.items] == ["driver-1"]
    set_based = await v1.list_namespaced_pod(
        NS, label_selector="app in (nvidia-device-plugin-daemonset,x),app"
    )
    assert len(set_based.items) == 3
    everywhere = await v1.list_pod_for_all_namespaces(
        label_selector=DP, field_selector="spec.nodeName=gpu-node-1"
    )
    assert sorted(p.metadata.namespace for p in everywhere.items) == ["default", NS]
    assert int(by_label.metadata.resource_version) == env.cluster.resource_version


async def test_list_rejects_unsupported_field_selector_with_400(v1: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        await v1.list_namespaced_pod(NS, field_selector="spec.schedulerName=x")
    assert err.value.status == 400
    assert json.loads(err.value.body)["reason"] == "BadRequest"


async def test_list_pages_with_limit_and_continue(env: SimEnv, v1: client.CoreV1Api) -> None:
    for i in range(7):
        env.cluster.add_pod(f"extra-{i}", node="gpu-node-2")
    seen: list[str] = []
    token = None
    while True:
        page = await v1.list_namespaced_pod(NS, limit=4, _continue=token)
        assert len(page.items) <= 4
        seen += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert len(seen) == 10
    assert len(set(seen)) == 10


async def test_get_node_returns_provider_id_and_404_for_missing(env: SimEnv, v1: client.CoreV1Api) -> None:
    node = await v1.read_node("gpu-node-1")
    assert node.spec.provider_id.startswith("aws:///us-east-1a/i-0")
    assert node.spec.provider_id == env.cluster.node("gpu-node-1")["spec"]["providerID"]
    with pytest.raises(ApiException) as err:
        await v1.read_node("nope")
    assert err.value.status == 404
    assert json.loads(err.value.body)["message"] == 'nodes "nope" not found'
    nodes = await v1.list_node()
    assert [n.metadata.name for n in nodes.items] == ["gpu-node-1", "gpu-node-2", "gpu-node-3"]


async def test_version_endpoint(env: SimEnv) -> None:
    async with client.ApiClient(env.config) as api:
        info = await client.VersionApi(api).get_code()
    assert info.major == "1"
    assert info.git_version.startswith("v1.")


async def test_request_without_token_gets_401(env: SimEnv) -> None:
    cfg = client.Configuration(host=env.server.url)
    async with client.ApiClient(cfg) as api:
        with pytest.raises(ApiException) as err:
            await client.CoreV1Api(api).list_namespaced_pod(NS)
    assert err.value.status == 401
    assert json.loads(err.value.body)["kind"] == "Status"


async def test_fail_requests_gives_status_errors_then_recovers(env: SimEnv, v1: client.CoreV1Api) -> None:
    env.cluster.fail_requests(1, 500)
    with pytest.raises(ApiException) as err:
        await v1.list_namespaced_pod(NS)
    assert err.value.status == 500
    assert json.loads(err.value.body)["reason"] == "InternalError"
    assert len((await v1.list_namespaced_pod(NS)).items) == 3

    env.cluster.fail_requests(1, 429, path_contains="/nodes/")
    await v1.list_namespaced_pod(NS)  # does not match, so not consumed
    with pytest.raises(ApiException) as err:
        await v1.read_node("gpu-node-1")
    assert err.value.status == 429
    assert err.value.headers["Retry-After"] == "1"


async def test_request_counts_name_each_call(env: SimEnv, v1: client.CoreV1Api) -> None:
    await v1.list_namespaced_pod(NS)
    await v1.read_node("gpu-node-1")
    await v1.list_node()
    async with watch.Watch() as w:
        async for _ in w.stream(v1.list_namespaced_pod, NS, timeout_seconds=1):
            w.stop()
    expected = {"list pods": 1, "get node": 1, "list nodes": 1, "watch pods": 1}
    assert dict(env.cluster.request_counts) == expected


# -- watch ------------------------------------------------------------------------------------------
async def test_watch_streams_added_modified_deleted_and_bookmarks(env: SimEnv, v1: client.CoreV1Api) -> None:
    listed = await v1.list_namespaced_pod(NS, label_selector=DP)
    async with watch.Watch() as w:
        stream = w.stream(
            v1.list_namespaced_pod,
            NS,
            label_selector=DP,
            resource_version=listed.metadata.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=20,
        )
        events = []
        async for event in stream:
            events.append(event)
            if len(events) == 1:  # the first bookmark: now change things live
                env.cluster.add_pod("new", node="gpu-node-2")
                env.cluster.restart_container("new")
                env.cluster.delete_pod("new")
            if event["type"] == "DELETED":
                w.stop()

    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks
    assert bookmarks[0]["raw_object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    changes = [(e["type"], e["object"]) for e in events if e["type"] != "BOOKMARK"]
    assert [t for t, _ in changes] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    statuses = [obj.status.container_statuses[0] for _, obj in changes]
    assert [(s.restart_count, s.ready) for s in statuses] == [(0, True), (1, False), (1, True), (1, True)]
    versions = [int(obj.metadata.resource_version) for _, obj in changes]
    assert versions == sorted(versions)
    assert versions[0] > int(listed.metadata.resource_version)
    assert int(w.resource_version) >= versions[-1]


async def test_watch_without_resource_version_starts_with_current_objects(v1: client.CoreV1Api) -> None:
    async with watch.Watch() as w:
        events = [e async for e in w.stream(v1.list_node, timeout_seconds=1)]
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "gpu-node-1"),
        ("ADDED", "gpu-node-2"),
        ("ADDED", "gpu-node-3"),
    ]


async def test_watch_list_sends_initial_events_then_an_end_bookmark(
    env: SimEnv, v1: client.CoreV1Api
) -> None:
    async with watch.Watch() as w:
        stream = w.stream(
            v1.list_namespaced_pod,
            NS,
            send_initial_events=True,
            resource_version_match="NotOlderThan",
            allow_watch_bookmarks=True,
            timeout_seconds=5,
        )
        events = []
        async for e in stream:
            events.append(e)
            if e["type"] == "BOOKMARK":
                w.stop()
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
    end = events[-1]["raw_object"]["metadata"]
    assert end["annotations"]["k8s.io/initial-events-end"] == "true"
    assert int(end["resourceVersion"]) == env.cluster.resource_version


async def test_list_at_a_future_version_is_a_504(env: SimEnv, v1: client.CoreV1Api) -> None:
    ahead = str(env.cluster.resource_version + 100)
    with pytest.raises(ApiException) as err:
        await v1.list_namespaced_pod(NS, resource_version=ahead)
    assert err.value.status == 504


async def test_watch_reports_pods_leaving_and_entering_the_selector(
    env: SimEnv, v1: client.CoreV1Api
) -> None:
    rv = (await v1.list_namespaced_pod(NS, label_selector=DP)).metadata.resource_version

    async def scenario() -> None:
        await asyncio.sleep(0.1)
        env.cluster.label_pod(POD1, {"app": "something-else"})
        env.cluster.label_pod(POD1, {"app": "nvidia-device-plugin-daemonset"})
        env.cluster.delete_pod(POD1)

    async with watch.Watch() as w, asyncio.TaskGroup() as tg:
        tg.create_task(scenario())
        stream = w.stream(
            v1.list_namespaced_pod, NS, label_selector=DP, resource_version=rv, timeout_seconds=20
        )
        events = []
        async for e in stream:
            events.append((e["type"], e["raw_object"]["metadata"]["labels"]["app"]))
            if len(events) == 3:
                w.stop()
    assert events == [
        ("DELETED", "nvidia-device-plugin-daemonset"),  # the old object, at the new resourceVersion
        ("ADDED", "nvidia-device-plugin-daemonset"),
        ("DELETED", "nvidia-device-plugin-daemonset"),
    ]


async def test_watch_from_compacted_version_gets_410_error_line(env: SimEnv, v1: client.CoreV1Api) -> None:
    old = (await v1.list_namespaced_pod(NS)).metadata.resource_version
    env.cluster.add_pod("later", node="gpu-node-1")
    floor = env.cluster.compact()

    resp = await v1.list_namespaced_pod(NS, watch=True, resource_version=old, _preload_content=False)
    async with resp:
        assert resp.status == 200
        lines = (await resp.read()).splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "ERROR"
    assert event["object"] == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: {old} ({floor})",
        "reason": "Expired",
        "code": 410,
    }


async def test_watch_from_compacted_version_raises_api_exception_410(
    env: SimEnv, v1: client.CoreV1Api
) -> None:
    old = (await v1.list_namespaced_pod(NS)).metadata.resource_version
    env.cluster.add_pod("later", node="gpu-node-1")
    env.cluster.compact()
    async with watch.Watch() as w:
        with pytest.raises(ApiException) as err:
            async for _ in w.stream(v1.list_namespaced_pod, NS, resource_version=old, timeout_seconds=5):
                pass
    assert err.value.status == 410
    # A fresh list works and its resourceVersion can be watched again.
    rv = (await v1.list_namespaced_pod(NS)).metadata.resource_version
    async with watch.Watch() as w:
        assert [
            e async for e in w.stream(v1.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=1)
        ] == []


async def test_exact_list_at_compacted_version_gets_410(env: SimEnv, v1: client.CoreV1Api) -> None:
    old = (await v1.list_namespaced_pod(NS)).metadata.resource_version
    env.cluster.add_pod("later", node="gpu-node-1")
    env.cluster.compact()
    with pytest.raises(ApiException) as err:
        await v1.list_namespaced_pod(NS, resource_version=old, resource_version_match="Exact")
    assert err.value.status == 410


async def test_drop_watches_ends_the_stream(env: SimEnv, v1: client.CoreV1Api) -> None:
    rv = (await v1.list_namespaced_pod(NS)).metadata.resource_version
    async with watch.Watch() as w, asyncio.timeout(30):
        stream = w.stream(v1.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=600)
        env.cluster.add_pod("first", node="gpu-node-1")
        seen = []
        async for e in stream:  # ends with StopAsyncIteration long before timeout_seconds
            seen.append(e["object"].metadata.name)
            env.cluster.drop_watches()
    assert seen == ["first"]


async def test_drop_watches_reset_aborts_the_connection(env: SimEnv, v1: client.CoreV1Api) -> None:
    async with watch.Watch() as w, asyncio.timeout(30):
        stream = w.stream(v1.list_node, timeout_seconds=600)

        async def read_until_cut() -> None:
            async for _ in stream:
                env.cluster.drop_watches(reset=True)

        with pytest.raises(aiohttp.ClientPayloadError):
            await read_until_cut()


async def test_watch_without_timeout_resumes_after_a_dropped_stream(
    env: SimEnv, v1: client.CoreV1Api
) -> None:
    rv = (await v1.list_namespaced_pod(NS)).metadata.resource_version
    env.cluster.add_pod("before-drop", node="gpu-node-1")
    async with watch.Watch() as w, asyncio.timeout(30):
        names = []
        async for e in w.stream(v1.list_namespaced_pod, NS, resource_version=rv):
            names.append(e["object"].metadata.name)
            if len(names) == 1:
                env.cluster.drop_watches()
                env.cluster.add_pod("after-drop", node="gpu-node-1")
            else:
                w.stop()
    assert names == ["before-drop", "after-drop"]
    assert env.cluster.request_counts["watch pods"] == 2  # the client re-watched from the last rv


async def test_failed_watch_request_surfaces_as_api_exception(env: SimEnv, v1: client.CoreV1Api) -> None:
    env.cluster.fail_requests(1, 503, path_contains="watch=True")
    async with watch.Watch() as w:
        with pytest.raises(ApiException) as err:
            async for _ in w.stream(v1.list_namespaced_pod, NS, timeout_seconds=1):
                pass
    assert err.value.status == 503


# -- exec -------------------------------------------------------------------------------------------
async def test_exec_returns_capture_bytes_on_stdout_and_success_status(v1ws: client.CoreV1Api) -> None:
    result = await run_exec(v1ws, POD1, SMI_XML)
    packaged = resources.files("gpuid.sim").joinpath("captures/gpuid-h100-sxm-x8.xml").read_bytes()
    assert result.stdout == packaged
    assert len(packaged) > 32 * 1024  # so it crossed several frames
    assert result.stderr == b""
    assert result.ready_frames == 2
    assert json.loads(result.status) == {"metadata": {}, "status": "Success"}
    assert WsApiClient.parse_error_data(result.status) == 0


async def test_exec_missing_nvidia_smi_exits_127(env: SimEnv, v1ws: client.CoreV1Api) -> None:
    env.cluster.set_exec(POD1, missing_smi=True)
    result = await run_exec(v1ws, POD1, SMI_XML)
    assert result.stdout == b""
    assert result.stderr == b"sh: 1: nvidia-smi: not found\n"
    assert WsApiClient.parse_error_data(result.status) == 127
    assert json.loads(result.status)["reason"] == "NonZeroExitCode"


async def test_exec_list_uses_companion_file_or_xml(v1ws: client.CoreV1Api) -> None:
    mig = await run_exec(v1ws, POD3, ["nvidia-smi", "-L"])
    assert mig.stdout == bundled_capture("telegraf-a100-sxm4-mig").listing
    assert b"MIG-" in mig.stdout
    h100 = await run_exec(v1ws, POD1, ["sh", "-c", "PATH=$PATH:/run/nvidia/driver/usr/bin nvidia-smi -L"])
    lines = h100.stdout.decode().splitlines()
    assert len(lines) == 8
    assert lines[0].startswith("GPU 0: NVIDIA H100")
    assert all(
        f"(UUID: {u})" in h100.stdout.decode() for u in bundled_capture("gpuid-h100-sxm-x8").gpu_uuids()
    )


async def test_exec_behaviour_overrides(env: SimEnv, v1ws: client.CoreV1Api) -> None:
    env.cluster.set_exec(POD1, delay=0.05, exit_code=3, stderr=b"boom\n", stdout=b"partial")
    result = await run_exec(v1ws, POD1, SMI_XML)
    assert (result.stdout, result.stderr) == (b"partial", b"boom\n")
    assert WsApiClient.parse_error_data(result.status) == 3
    env.cluster.set_exec(POD1)  # healed
    assert WsApiClient.parse_error_data((await run_exec(v1ws, POD1, SMI_XML)).status) == 0


async def test_exec_hang_never_answers_until_client_leaves(env: SimEnv, v1ws: client.CoreV1Api) -> None:
    env.cluster.set_exec(POD1, hang=True)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await run_exec(v1ws, POD1, SMI_XML)
    assert WsApiClient.parse_error_data((await run_exec(v1ws, POD3, SMI_XML)).status) == 0


async def test_exec_argv_without_binary_is_an_internal_error(v1ws: client.CoreV1Api) -> None:
    result = await run_exec(v1ws, POD1, ["no-such-binary"])
    status = json.loads(result.status)
    assert (status["reason"], status["code"]) == ("InternalError", 500)
    assert "executable file not found in $PATH" in status["message"]
    with pytest.raises(ValueError):
        WsApiClient.parse_error_data(result.status)  # no exit code: callers must handle this


async def test_exec_on_missing_pod_fails_the_handshake_with_404(v1ws: client.CoreV1Api) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await run_exec(v1ws, "no-such-pod", SMI_XML)
    assert err.value.status == 404


async def test_exec_on_unknown_container_fails_the_handshake_with_400(v1ws: client.CoreV1Api) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await run_exec(v1ws, POD1, SMI_XML, container="nvidia-driver-ctr")
    assert err.value.status == 400


async def wait_until(condition: Any, what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for: {what}")


async def test_client_leaving_mid_exec_frees_the_session_without_log_noise(
    env: SimEnv, v1ws: client.CoreV1Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    env.cluster.set_exec(POD1, stdout=b"x" * 8_000_000)  # 245 frames: the client leaves mid-stream
    async with await v1ws.connect_get_namespaced_pod_exec(
        POD1, NS, command=SMI_XML, stdout=True, stderr=True, _preload_content=False
    ) as ws:
        frames = [await ws.receive() for _ in range(3)]
        assert [f.data[:1] for f in frames] == [b"\x01", b"\x02", b"\x01"]
        assert env.server.open_exec_sessions == 1
    await wait_until(lambda: env.server.open_exec_sessions == 0, "exec session closed")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert WsApiClient.parse_error_data((await run_exec(v1ws, POD3, SMI_XML)).status) == 0


async def test_client_leaving_a_watch_frees_it(env: SimEnv, v1: client.CoreV1Api) -> None:
    async with watch.Watch() as w:
        async for _ in w.stream(v1.list_node):  # no bookmarks, no timeout: only the hang-up can end it
            assert env.server.open_watches == 1
            break
    await wait_until(lambda: env.server.open_watches == 0, "watch closed")


# -- lifecycle --------------------------------------------------------------------------------------
async def test_stop_ends_open_watches_and_exec_sessions(tmp_path: Path) -> None:
    cluster = demo_cluster(1)
    cluster.set_exec(POD1, hang=True)
    server = SimApiServer(cluster)
    await server.start()
    cfg = client.Configuration()
    await config.load_kube_config(
        config_file=str(server.write_kubeconfig(tmp_path / "kc")), client_configuration=cfg
    )
    async with client.ApiClient(cfg) as api, WsApiClient(cfg) as ws_api, watch.Watch() as w:
        v1, v1ws = client.CoreV1Api(api), client.CoreV1Api(ws_api)

        async def watch_all() -> list[str]:
            return [e["type"] async for e in w.stream(v1.list_namespaced_pod, NS, timeout_seconds=600)]

        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            watching = tg.create_task(watch_all())
            execing = tg.create_task(run_exec(v1ws, POD1, SMI_XML))
            await asyncio.sleep(0.2)
            await server.stop()
    assert watching.result() == ["ADDED"]
    assert execing.result().status == b""  # closed without an answer


async def test_restart_keeps_the_address_and_the_state(env: SimEnv, v1: client.CoreV1Api) -> None:
    url = env.server.url
    await env.server.stop()
    with pytest.raises(aiohttp.ClientConnectorError):
        await v1.list_namespaced_pod(NS)
    assert await env.server.start() == url
    assert len((await v1.list_namespaced_pod(NS)).items) == 3


async def test_write_kubeconfig_names_context_and_namespace(env: SimEnv, tmp_path: Path) -> None:
    loader = await config.load_kube_config(config_file=str(env.server.write_kubeconfig(tmp_path / "k")))
    assert loader.current_context["name"] == "gpuid-sim"
    assert loader.current_context["context"]["namespace"] == NS


def test_demo_cluster_cycles_bundled_captures() -> None:
    cluster = demo_cluster(4)
    captures = [cluster.capture_for_node(f"gpu-node-{i}") for i in range(1, 5)]
    assert [c.name for c in captures if c] == [
        "gpuid-h100-sxm-x8",
        "gpuid-gb200-x4",
        "telegraf-a100-sxm4-mig",
        "gpuid-h100-sxm-x8",
    ]
    assert [len(c.gpu_uuids()) for c in captures if c] == [8, 4, 1, 8]
    pod = cluster.pod(device_plugin_pod_name("gpu-node-2"))
    assert pod["spec"]["nodeName"] == "gpu-node-2"
    assert {"type": "Ready", "status": "True"}.items() <= pod["status"]["conditions"][1].items()


def test_shell_interpreter_sequences_and_redirections() -> None:
    capture = bundled_capture("gpuid-gb200-x4")
    both = run_command(["sh", "-c", "timeout 30 nvidia-smi -q -x && echo --- && nvidia-smi -L"], capture)
    assert both.stdout == capture.xml + b"---\n" + capture.listing
    fallback = run_command(["sh", "-c", "nvidia-smi -L 2>/dev/null || echo none"], None)
    assert fallback.exit_code == 0
    assert fallback.stdout.endswith(b"none\n")
    assert run_command(["sh", "-c", "foo"], capture).exit_code == 127
    assert run_command(["sh", "-c", "exit 4"], capture).exit_code == 4
