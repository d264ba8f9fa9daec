"""gpuid's RBAC is least privilege, and stays so: every rule of every overlay is spelled out here.

A wider rule (a verb, a resource, a ClusterRole instead of a Role) fails this
test, so a widening is always a visible, reviewed change of this file.
"""

from __future__ import annotations

import pytest

from .manifests import OVERLAYS, Doc, find, render, settings_of, workloads

Rule = tuple[str, str, tuple[str, ...], tuple[str, ...]]  # api group, resource, resource names, verbs
RoleKey = tuple[str, str, str]  # kind, namespace ("" for cluster-wide), name

POD_READ: Rule = ("", "pods", (), ("get", "list", "watch"))
# WebSocket exec is an HTTP GET: "get" on pods/exec; Kubernetes 1.35+ also checks "create".
POD_EXEC: Rule = ("", "pods/exec", (), ("create", "get"))
NODE_READ: Rule = ("", "nodes", (), ("get", "list", "watch"))
NODE_PATCH: Rule = ("", "nodes", (), ("patch",))
# Events about a Node live in "default"; "get" reads back an Event whose create answered 409.
NODE_EVENTS: Rule = ("events.k8s.io", "events", (), ("create", "get"))

BASE: dict[RoleKey, set[Rule]] = {
    ("Role", "gpu-operator", "gpuid-scan"): {POD_READ, POD_EXEC},
    ("ClusterRole", "", "gpuid-nodes"): {NODE_READ},
    ("Role", "gpuid", "gpuid-leader-election"): {
        ("coordination.k8s.io", "leases", (), ("create",)),
        ("coordination.k8s.io", "leases", ("gpuid",), ("get", "update")),
    },
}
EXPECTED: dict[str, dict[RoleKey, set[Rule]]] = {
    "stdout": BASE,
    "s3": BASE,
    "postgres": BASE,
    "http": BASE,
    "bugreport": {
        **BASE,
        ("Role", "gpu-operator", "gpuid-driver-pods"): {POD_READ, POD_EXEC},
        ("ClusterRole", "", "gpuid-bug-reports"): {NODE_PATCH},
    },
    "node-labels": {**BASE, ("ClusterRole", "", "gpuid-node-labels"): {NODE_PATCH}},
    "fleet": {
        **BASE,
        ("ClusterRole", "", "gpuid-gpu-state"): {NODE_PATCH},
        ("Role", "default", "gpuid-node-events"): {NODE_EVENTS},
    },
    "daemonset": {k: v for k, v in BASE.items() if k[2] != "gpuid-leader-election"},
    "monitoring": {},
}


def rules_of(role: Doc) -> set[Rule]:
    """Each rule split into one entry per API group and resource, so equal grants compare equal."""
    found = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "resourceNames", "verbs"}, f"unexpected rule {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                names = tuple(sorted(rule.get("resourceNames", ())))
                found.add((group, resource, names, tuple(sorted(rule["verbs"]))))
    return found


def roles(docs: list[Doc]) -> dict[RoleKey, set[Rule]]:
    return {
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): rules_of(d)
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }


def test_every_overlay_has_expected_rbac() -> None:
    assert set(EXPECTED) == set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_rules_are_exactly_the_least_privilege_ones(overlay: str) -> None:
    assert roles(render(overlay)) == EXPECTED[overlay]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_wildcards_and_no_exec_or_secrets_cluster_wide(overlay: str) -> None:
    for (kind, _, name), rules in roles(render(overlay)).items():
        for group, resource, names, verbs in rules:
            assert "*" not in (group, resource, *names, *verbs), f"wildcard in {name}"
            assert resource not in ("secrets", "pods/attach", "pods/portforward", "nodes/proxy"), name
            if kind == "ClusterRole":
                assert resource == "nodes", f"{name}: only nodes may be granted cluster-wide"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_node_patch_only_where_node_labels_or_bug_reports_are_on(overlay: str) -> None:
    docs = render(overlay)
    patches = any(NODE_PATCH in rules for rules in roles(docs).values())
    settings = {k: v for w in workloads(docs) for k, v in settings_of(docs, w).items()}
    writers = ("NODE_LABELS", "BUG_REPORT_ENABLED", "GPU_CHANGE_EVENTS")
    assert patches == any(settings.get(name) == "true" for name in writers)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_events_only_where_gpu_change_events_are_on_and_only_in_default(overlay: str) -> None:
    docs = render(overlay)
    granted = {key for key, rules in roles(docs).items() if NODE_EVENTS in rules}
    settings = {k: v for w in workloads(docs) for k, v in settings_of(docs, w).items()}
    wanted = (
        {("Role", "default", "gpuid-node-events")} if settings.get("GPU_CHANGE_EVENTS") == "true" else set()
    )
    assert granted == wanted


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scan_roles_live_in_the_namespaces_gpuid_watches(overlay: str) -> None:
    docs = render(overlay)
    for workload in workloads(docs):
        settings = settings_of(docs, workload)
        namespaces = {k[1] for k, rules in roles(docs).items() if POD_EXEC in rules}
        expected = {settings["NAMESPACE"]}
        if settings.get("BUG_REPORT_ENABLED") == "true":
            expected.add(settings.get("DRIVER_NAMESPACE") or settings["NAMESPACE"])
        assert namespaces == expected
        if "gpuid-leader-election" in {k[2] for k in roles(docs)}:
            lease = next(r for k, r in roles(docs).items() if k[2] == "gpuid-leader-election")
            assert ("coordination.k8s.io", "leases", (settings["LEASE_NAME"],), ("get", "update")) in lease


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_binding_grants_a_role_of_this_overlay_to_gpuids_service_account_only(overlay: str) -> None:
    docs = render(overlay)
    defined = roles(docs)
    for binding in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding"):
        namespace = binding["metadata"].get("namespace", "")
        ref = binding["roleRef"]
        key = (ref["kind"], namespace if ref["kind"] == "Role" else "", ref["name"])
        assert key in defined, (
            f"{binding['metadata']['name']} binds {key}, which this overlay does not define"
        )
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpuid", "namespace": "gpuid"}]
    bound = {
        (
            b["roleRef"]["kind"],
            b["metadata"].get("namespace", "") if b["kind"] == "RoleBinding" else "",
            b["roleRef"]["name"],
        )
        for b in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding")
    }
    assert bound == set(defined)  # no role left unbound, none bound twice over
