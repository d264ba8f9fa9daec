"""The simulated API server's front door: who a token is, and what exec/attach/port-forward asked for.

Admission is only as good as what it is shown: these tests check that the sim
builds the ``PodExecOptions`` and the AdmissionRequest the way the API server
does from what the real client sends, records them, and answers a refusal as
a ValidatingAdmissionPolicy does (403 before the upgrade). The hook here is a
plain function; the shipped CEL policy is tested in tests/test_exec_policy.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.config import load_kube_config
from kubernetes_asyncio.stream import WsApiClient

from gpuid.sim import SERVICE_ACCOUNT, SimApiServer, SimCluster
from gpuid.sim.apiserver import CONNECT_LOG_SIZE

NS, POD = "gpu-operator", "dp-1"
Seen = list[tuple[Mapping[str, Any], Mapping[str, Any]]]


class Hook:
    """Remembers what it was asked; refuses commands that start with ``refuse``."""

    def __init__(self) -> None:
        self.seen: Seen = []

    def __call__(self, request: Mapping[str, Any], obj: Mapping[str, Any]) -> str | None:
        self.seen.append((request, obj))
        return "no, thanks" if obj.get("command", [""])[:1] == ["refuse"] else None


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[SimApiServer, Hook, Path]]:
    cluster = SimCluster()
    cluster.add_node("n1")
    cluster.add_pod(POD, node="n1", containers=("nvidia-device-plugin", "sidecar"))
    hook = Hook()
    async with SimApiServer(cluster, admission=hook) as server:
        yield server, hook, server.write_kubeconfig(tmp_path / "kubeconfig")


async def real_client_exec(kubeconfig: Path, command: list[str], **streams: bool) -> bytes:
    config = client.Configuration()
    await load_kube_config(str(kubeconfig), client_configuration=config)
    async with WsApiClient(config) as api:
        return str(
            await client.CoreV1Api(api).connect_get_namespaced_pod_exec(
                POD, NS, command=command, container="nvidia-device-plugin", **streams
            )
        ).encode()


async def test_an_exec_is_admitted_as_podexecoptions_from_the_service_account(
    served: tuple[SimApiServer, Hook, Path],
) -> None:
    server, hook, kubeconfig = served
    out = await real_client_exec(kubeconfig, ["echo", "hi"], stdout=True, stderr=True, stdin=False, tty=False)
    assert out == b"hi\n"
    [(request, obj)] = hook.seen
    assert obj == {
        "kind": "PodExecOptions",
        "apiVersion": "v1",
        "stdout": True,
        "stderr": True,  # false booleans are left out, as in the object's JSON
        "container": "nvidia-device-plugin",
        "command": ["echo", "hi"],
    }
    assert request["operation"] == "CONNECT"
    assert (request["resource"], request["subResource"]) == (
        {"group": "", "version": "v1", "resource": "pods"},
        "exec",
    )
    assert request["kind"] == {"group": "", "version": "v1", "kind": "PodExecOptions"}
    assert (request["namespace"], request["name"]) == (NS, POD)
    assert request["userInfo"] == {
        "username": SERVICE_ACCOUNT,
        "groups": ["system:serviceaccounts", "system:serviceaccounts:gpuid", "system:authenticated"],
    }
    [record] = server.connect_log
    assert (record.user, record.namespace, record.pod) == (SERVICE_ACCOUNT, NS, POD)
    assert record.subresource == "exec"
    assert (record.container, record.command, record.denied) == ("nvidia-device-plugin", ("echo", "hi"), None)
    assert [record.stream(s) for s in ("stdin", "stdout", "stderr", "tty")] == [False, True, True, False]


async def test_a_refusal_is_a_403_before_the_upgrade_and_nothing_runs(
    served: tuple[SimApiServer, Hook, Path],
) -> None:
    server, _, kubeconfig = served
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await real_client_exec(kubeconfig, ["refuse", "me"], stdin=True, tty=True)
    assert refused.value.status == 403
    assert server.cluster.request_counts["exec"] == 1
    [record] = server.connect_log
    assert (record.denied, record.stream("stdin"), record.stream("tty")) == ("no, thanks", True, True)


async def raw_get(
    server: SimApiServer, path: str, query: list[tuple[str, str]], token: str
) -> tuple[int, Any]:
    url = f"{server.url}/api/v1/namespaces/{NS}/pods/{POD}/{path}"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session, session.get(url, params=query, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_the_refusal_carries_the_hooks_words(served: tuple[SimApiServer, Hook, Path]) -> None:
    server, _, _ = served
    status, body = await raw_get(server, "exec", [("command", "refuse")], server.token)
    assert (status, body["reason"]) == (403, "Forbidden")
    assert body["message"] == f'pods "{POD}" is forbidden: no, thanks'


@pytest.mark.parametrize("value", ["yes", "2", ""])
async def test_booleans_are_parsed_like_the_api_server_does(
    served: tuple[SimApiServer, Hook, Path], value: str
) -> None:
    server, hook, _ = served
    status, body = await raw_get(server, "exec", [("command", "true"), ("stdin", value)], server.token)
    assert status == 400
    assert "strconv.ParseBool" in body["message"]
    assert hook.seen == []


async def test_attach_and_port_forward_pass_admission_then_are_not_simulated(
    served: tuple[SimApiServer, Hook, Path],
) -> None:
    server, hook, _ = served
    streams = [("container", "sidecar"), ("stdin", "1"), ("tty", "T")]
    attach = await raw_get(server, "attach", streams, server.token)
    forward = await raw_get(server, "portforward", [("ports", "22"), ("ports", "8080")], server.token)
    assert [s for s, _ in (attach, forward)] == [400, 400]
    assert "does not simulate attach" in attach[1]["message"]
    assert [obj for _, obj in hook.seen] == [
        {"kind": "PodAttachOptions", "apiVersion": "v1", "stdin": True, "tty": True, "container": "sidecar"},
        {"kind": "PodPortForwardOptions", "apiVersion": "v1", "ports": [22, 8080]},
    ]
    assert [r["subResource"] for r, _ in hook.seen] == ["attach", "portforward"]
    assert [r.subresource for r in server.connect_log] == ["attach", "portforward"]


async def test_each_token_is_one_user_and_an_unknown_token_is_nobody(
    served: tuple[SimApiServer, Hook, Path],
) -> None:
    server, hook, _ = served
    admin = server.add_user("kubernetes-admin")
    # Admitted: then refused only because a plain GET asks for no WebSocket upgrade.
    assert (await raw_get(server, "exec", [("command", "true")], admin))[0] == 400
    assert (await raw_get(server, "exec", [("command", "true")], "stolen-but-wrong"))[0] == 401
    [(request, _)] = hook.seen
    assert request["userInfo"] == {"username": "kubernetes-admin", "groups": ["system:authenticated"]}


def test_the_kubeconfig_names_its_user_as_the_service_account_it_is(tmp_path: Path) -> None:
    server = SimApiServer(SimCluster())
    server.url = "http://127.0.0.1:1"
    config = yaml.safe_load(server.write_kubeconfig(tmp_path / "kubeconfig").read_text())
    [user] = config["users"]
    assert user["name"] == SERVICE_ACCOUNT == config["contexts"][0]["context"]["user"]
    assert server.connect_log.maxlen == CONNECT_LOG_SIZE  # the demo runs for hours: the log is bounded
