"""Each of gpuid's two namespaces is one setting in a user's overlay, and moves everything that depends on it.

gpuid's own namespace is the overlay's ``namespace:`` line; the GPU Operator's,
where gpuid scans and must be allowed to exec, is NAMESPACE in gpuid-config.
The Roles that grant exec follow NAMESPACE (deployment/wiring), never the
``namespace:`` line: in the wrong namespace they give gpuid a 403 and a crash loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .manifests import (
    Doc,
    documents,
    environment,
    find,
    kustomize,
    one,
    own_overlay,
    user_kustomization,
    workloads,
)

EXEC_OBJECTS = {("Role", "gpuid-scan"), ("RoleBinding", "gpuid-scan")}
DRIVER_OBJECTS = {("Role", "gpuid-driver-pods"), ("RoleBinding", "gpuid-driver-pods")}
CLUSTER_WIDE = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
# Events about Nodes live in "default" whatever gpuid's namespace (components/fleet).
EVENT_OBJECTS = {("Role", "gpuid-node-events"), ("RoleBinding", "gpuid-node-events")}
EVERYTHING = ("bug-reports", "node-labels", "monitoring", "s3", "spool", "fleet")


def settings(namespace: str | None = None, operator: str | None = None) -> dict[str, Any]:
    """What a user writes in the overlay for each namespace; None keeps the default."""
    more: dict[str, Any] = {}
    if namespace:
        more["namespace"] = namespace
    if operator:
        literals = [f"NAMESPACE={operator}"]
        more["configMapGenerator"] = [
            {"name": "gpuid-config", "namespace": "gpuid", "behavior": "merge", "literals": literals}
        ]
    return more


def rendered(tmp_path: Path, base: str, more: dict[str, Any], *, wiring: bool = True) -> list[Doc]:
    kustomization = user_kustomization(f"overlays/{base}", EVERYTHING, **more)
    if not wiring:
        del kustomization["transformers"]
    return documents(kustomize(own_overlay(tmp_path, "mine", kustomization)))


def namespaces(docs: list[Doc]) -> dict[tuple[str, str], str]:
    """Where each namespaced object is, by (kind, name)."""
    return {
        (d["kind"], d["metadata"]["name"]): d["metadata"]["namespace"]
        for d in docs
        if d["kind"] not in CLUSTER_WIDE
    }


def assert_placed(docs: list[Doc], own: str, operator: str) -> None:
    placed = namespaces(docs)
    assert {k for k, ns in placed.items() if ns == operator} == EXEC_OBJECTS | DRIVER_OBJECTS
    assert {k for k, ns in placed.items() if ns == "default"} == EVENT_OBJECTS
    mine = set(placed) - EXEC_OBJECTS - DRIVER_OBJECTS - EVENT_OBJECTS
    assert {k for k, ns in placed.items() if ns not in (operator, "default")} == mine
    assert {placed[k] for k in mine} == {own}
    policy = one(docs, "ValidatingAdmissionPolicy")  # the exec policy follows both namespaces
    [variable] = [v for v in policy["spec"]["variables"] if v["name"] == "namespace"]
    assert variable["expression"] == f"'{operator}'"
    [condition] = policy["spec"]["matchConditions"]
    assert f"'system:serviceaccount:{own}:gpuid'" in condition["expression"]
    assert one(docs, "Namespace")["metadata"]["name"] == own
    [workload] = workloads(docs)
    env = environment(docs, workload)
    assert env["NAMESPACE"] == operator
    assert "DRIVER_NAMESPACE" not in env  # the driver pods are looked for in NAMESPACE
    if "LEASE_NAMESPACE" in env:
        assert env["LEASE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    for binding in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpuid", "namespace": own}]
    monitor = one(docs, "ServiceMonitor")
    assert "namespaceSelector" not in monitor["spec"]  # it selects the Services of its own namespace:
    assert monitor["metadata"]["namespace"] == one(docs, "Service")["metadata"]["namespace"] == own


@pytest.mark.parametrize("base", ["stdout", "daemonset"])
@pytest.mark.parametrize(
    ("own", "operator"),
    [
        ("gpuid", "gpu-operator"),
        ("tools", "gpu-operator"),
        ("gpuid", "nvidia-gpu-operator"),
        ("tools", "nvidia-gpu-operator"),
    ],
)
def test_each_namespace_is_one_setting(tmp_path: Path, base: str, own: str, operator: str) -> None:
    more = settings(
        namespace=None if own == "gpuid" else own, operator=None if operator == "gpu-operator" else operator
    )
    assert_placed(rendered(tmp_path, base, more), own, operator)


def test_without_the_wiring_a_namespace_line_moves_the_exec_roles(tmp_path: Path) -> None:
    """A control: the wiring is what keeps the Roles where gpuid scans (kustomize alone moves them)."""
    placed = namespaces(rendered(tmp_path, "stdout", settings(namespace="tools"), wiring=False))
    assert {placed[k] for k in EXEC_OBJECTS | DRIVER_OBJECTS} == {"tools"}


def test_without_the_wiring_the_operator_namespace_moves_nothing(tmp_path: Path) -> None:
    placed = namespaces(rendered(tmp_path, "stdout", settings(operator="nvidia-gpu-operator"), wiring=False))
    assert {placed[k] for k in EXEC_OBJECTS | DRIVER_OBJECTS} == {"gpu-operator"}
