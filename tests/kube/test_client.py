"""The API clients look nothing up in the environment per request, and go through the proxy they are told of.

Against the simulated API server over TLS (as real API servers speak), with a
stand-in CONNECT proxy: what reaches the proxy is what a corporate proxy sees.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpuid.config import load_settings
from gpuid.kube.client import KubeClients, connect
from gpuid.kube.podexec import exec_in_pod
from gpuid.sim import SimApiServer, SimCluster
from gpuid.smi.commands import XML_COMMAND
from tests.support.app import GB200, Sim, add_gpu_node
from tests.support.proxy import ConnectProxy, connect_proxy


@pytest.fixture
async def tls_sim(tmp_path: Path) -> AsyncIterator[Sim]:
    cluster = SimCluster()
    async with SimApiServer(cluster, tls=True) as server:
        sim = Sim(cluster, server, server.write_kubeconfig(tmp_path / "kubeconfig"))
        add_gpu_node(sim, "n1", GB200)
        yield sim


@pytest.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ConnectProxy]:
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with connect_proxy() as running:
        yield running


async def list_and_exec(clients: KubeClients) -> tuple[int, int]:
    """One REST list and one WebSocket exec: the pods listed and the exec's exit code."""
    resp = await clients.core.list_namespaced_pod("gpu-operator", _preload_content=False)
    async with resp:
        pods = (await resp.json())["items"]
    done = await exec_in_pod(
        clients.core_ws, namespace="gpu-operator", pod="dp-n1", container="nvidia-device-plugin",
        command=XML_COMMAND, timeout=10, max_bytes=1 << 20,
    )  # fmt: skip
    return len(pods), done.exit_code


async def test_proxy_variables_are_ignored_unless_asked_for(
    tls_sim: Sim, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    clients = await connect(str(tls_sim.kubeconfig))
    try:
        assert not clients.rest.rest_client.pool_manager.trust_env
        assert not clients.ws.rest_client.pool_manager.trust_env
        assert await list_and_exec(clients) == (1, 0)
    finally:
        await clients.close()
    assert proxy.tunnels == []  # straight to the API server: no per-request environment lookup


async def test_kube_proxy_from_env_sends_rest_and_exec_through_https_proxy(
    tls_sim: Sim, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    settings = load_settings(
        {"CLUSTER_NAME": "t", "KUBECONFIG": str(tls_sim.kubeconfig), "KUBE_PROXY_FROM_ENV": "true"}
    )
    assert settings.kube.proxy_from_env
    clients = await connect(settings.kube.kubeconfig, proxy_from_env=settings.kube.proxy_from_env)
    try:
        assert await list_and_exec(clients) == (1, 0)
    finally:
        await clients.close()
    api = tls_sim.server.url.removeprefix("https://")
    assert proxy.tunnels == [api, api]  # the REST pool's connection and the exec's (aiohttp alone: REST only)


async def test_kubeconfig_proxy_url_carries_rest_and_exec(tls_sim: Sim, proxy: ConnectProxy) -> None:
    text = tls_sim.kubeconfig.read_text()
    server_line = f'    server: "{tls_sim.server.url}"\n'
    tls_sim.kubeconfig.write_text(text.replace(server_line, f"{server_line}    proxy-url: {proxy.url}\n"))
    clients = await connect(str(tls_sim.kubeconfig))
    try:
        assert await list_and_exec(clients) == (1, 0)
    finally:
        await clients.close()
    api = tls_sim.server.url.removeprefix("https://")
    assert proxy.tunnels == [api, api]  # exec too: the library alone would send it around the proxy


def test_proxy_from_env_is_off_by_default() -> None:
    assert not load_settings({"CLUSTER_NAME": "t"}).kube.proxy_from_env


async def test_no_proxy_keeps_the_api_server_direct_even_when_asked_to_use_the_environment(
    tls_sim: Sim, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    clients = await connect(str(tls_sim.kubeconfig), proxy_from_env=True)
    try:
        assert await list_and_exec(clients) == (1, 0)
    finally:
        await clients.close()
    assert proxy.tunnels == []
