"""The Deployment and the DaemonSet: replicas, scheduling, shutdown, probes, hardening, writable paths."""

from __future__ import annotations

import pytest

from gpuid.delivery.delivery import CLOSE_TIMEOUT
from gpuid.options import parse_bool, parse_duration

from .manifests import (
    OVERLAYS,
    Doc,
    container,
    environment,
    find,
    mebibytes,
    one,
    render,
    settings_of,
    spool_shortfalls,
    workloads,
)

CENTRAL = [o for o in OVERLAYS if o not in ("daemonset", "monitoring")]
WITH_WORKLOAD = [*CENTRAL, "daemonset"]


def workload_of(overlay: str) -> tuple[list[Doc], Doc]:
    docs = render(overlay)
    [workload] = workloads(docs)
    return docs, workload


@pytest.mark.parametrize("overlay", CENTRAL)
def test_central_deployment_runs_two_replicas_with_leader_election(overlay: str) -> None:
    docs, workload = workload_of(overlay)
    assert workload["kind"] == "Deployment"
    assert workload["spec"]["replicas"] == 2
    settings = settings_of(docs, workload)
    assert parse_bool(settings["LEADER_ELECTION"])
    env = environment(docs, workload)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["LEASE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # Soft anti-affinity: spread over nodes when possible, never unschedulable because of it.
    anti = workload["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    [term] = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"] == workload["spec"]["selector"]["matchLabels"]
    )
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == workload["spec"]["selector"]
    # An unready replica (not synced, crash-looping) can always be evicted, so it never blocks a drain.
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_daemonset_runs_one_agent_per_gpu_node_without_leader_election() -> None:
    docs, workload = workload_of("daemonset")
    assert workload["kind"] == "DaemonSet"
    settings = settings_of(docs, workload)
    assert not parse_bool(settings["LEADER_ELECTION"])
    env = environment(docs, workload)
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    spec = workload["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    gpu_taints = {(t["key"], t["operator"], t["effect"]) for t in spec["tolerations"]}
    assert gpu_taints == {
        ("nvidia.com/gpu", "Exists", "NoSchedule"),
        ("nvidia.com/gpu", "Exists", "NoExecute"),
    }
    assert find(docs, "Deployment") == []
    assert find(docs, "PodDisruptionBudget") == []
    assert [r for r in find(docs, "Role") if "leases" in str(r["rules"])] == []


@pytest.mark.parametrize("overlay", WITH_WORKLOAD)
def test_termination_grace_covers_an_orderly_shutdown(overlay: str) -> None:
    """Scans get SHUTDOWN_GRACE/2, the flush SHUTDOWN_GRACE, closing CLOSE_TIMEOUT: all before SIGKILL."""
    docs, workload = workload_of(overlay)
    grace = parse_duration(settings_of(docs, workload)["SHUTDOWN_GRACE"])
    assert workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 1.5 * grace + CLOSE_TIMEOUT


@pytest.mark.parametrize("overlay", WITH_WORKLOAD)
def test_probes_and_service_use_gpuids_health_port(overlay: str) -> None:
    docs, workload = workload_of(overlay)
    spec = container(workload)
    port = int(settings_of(docs, workload)["SERVER_PORT"])
    assert spec["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    service = one(docs, "Service", "gpuid")
    assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["publishNotReadyAddresses"] is True  # gpuid_ready=0 must still be scraped


@pytest.mark.parametrize("overlay", WITH_WORKLOAD)
def test_pod_is_hardened(overlay: str) -> None:
    docs, workload = workload_of(overlay)
    pod = workload["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == "gpuid"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(workload)["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "hostNetwork" not in pod
    assert "hostPID" not in pod
    namespace = one(docs, "Namespace", "gpuid")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", WITH_WORKLOAD)
def test_every_directory_gpuid_writes_is_a_size_limited_volume(overlay: str) -> None:
    """The root filesystem is read-only: /tmp, the spool and the bug-report directory must be mounts."""
    docs, workload = workload_of(overlay)
    settings = settings_of(docs, workload)
    writes = {"/tmp"} | {settings[k] for k in ("SPOOL_DIR", "BUG_REPORT_DIR") if settings.get(k)}
    mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    for path in writes:
        assert path in mounts, f"{path} is written by gpuid but not mounted"
        assert volumes[mounts[path]]["emptyDir"]["sizeLimit"]
    if settings.get("SPOOL_DIR"):  # each lane's own cap is reached before the kubelet evicts the pod
        assert spool_shortfalls(docs, workload) == []


def test_spool_room_is_checked_lane_by_lane() -> None:
    """A control of spool_shortfalls: three exporters on the spool's root volume alone do not fit."""
    docs, workload = workload_of("s3")
    config = one(docs, "ConfigMap")
    config["data"] |= {"EXPORTER_TYPE": "stdout,postgres", "EXPORTER_S3": "false"}
    assert spool_shortfalls(docs, workload) == [
        f"volume spool ({320 * 2**20} B) is too small for the spool lanes ['stdout', 'postgres']"
    ]


@pytest.mark.parametrize("overlay", WITH_WORKLOAD)
def test_requests_and_limits_are_set(overlay: str) -> None:
    _, workload = workload_of(overlay)
    resources = container(workload)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    assert mebibytes(resources["requests"]["memory"]) <= mebibytes(resources["limits"]["memory"])
