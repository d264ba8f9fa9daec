"""Every combination of components over every overlay composes into a gpuid that runs what it selects.

Each combination is a user's overlay as docs/deploy.md writes it (an overlay, more
components, the wiring last), rendered once by the real kubectl. Every rendering is
checked (the exporters gpuid will run, room for each spool lane, exec rights only
where gpuid scans, the released image), every distinct object is validated for the
oldest and newest Kubernetes, and gpuid is started in-process (in one worker
process per core) with every distinct container environment against the simulated
cluster, its backends down: its /metrics must show a lane for each exporter the
components selected and no other, each having received every record scanned.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes_validate.utils
import pytest

from .combinations import WORKLOAD_OVERLAYS, Rendering, canonical, render_all, render_batch
from .manifests import (
    AWS_SDK_VARIABLES,
    COMPONENTS,
    CUSTOM_KINDS,
    DEPLOYMENT,
    IMAGE,
    KNOWN_VARIABLES,
    KUBERNETES_VERSIONS,
    VERSION,
    Doc,
    components_of,
    container,
    documents,
    environment,
    exporters_of,
    find,
    kustomize,
    own_overlay,
    spool_shortfalls,
    tool,
    user_kustomization,
    workloads,
)
from .starts import rendered_env, start_each

WORKERS = min(os.cpu_count() or 2, 4)  # processes starting gpuid: its start-up is CPU-bound
# Rendering every combination takes longer than a test's usual minute, in whichever test comes first.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def renderings(tmp_path_factory: pytest.TempPathFactory) -> list[Rendering]:
    return render_all(tmp_path_factory.mktemp("compose"))


def test_a_rendering_in_a_batch_is_the_overlay_rendered_alone(tmp_path: Path) -> None:
    """A control of render_batch: each overlay, batched with the others, renders as by itself."""
    alone = {o: own_overlay(tmp_path, o, user_kustomization(f"overlays/{o}")) for o in WORKLOAD_OVERLAYS}
    batched = render_batch(tmp_path, list(enumerate(alone.values())))
    for (overlay, path), docs in zip(alone.items(), batched, strict=True):
        by_itself = [d for d in documents(kustomize(path)) if d["kind"] != "Namespace"]
        assert sorted(map(canonical, docs)) == sorted(map(canonical, by_itself)), overlay


@pytest.mark.slow
def test_every_combination_of_components_over_every_overlay_renders(renderings: list[Rendering]) -> None:
    expected = sum(2 ** len(set(COMPONENTS) - set(components_of(o))) for o in WORKLOAD_OVERLAYS)
    assert len(renderings) == expected
    overlays = len(WORKLOAD_OVERLAYS)
    print(f"\n{len(renderings)} combinations of {len(COMPONENTS)} components over {overlays} overlays")
    assert [r.name for r in renderings if len(workloads(r.docs)) != 1] == []


def test_each_rendering_selects_exactly_the_exporters_of_its_components(renderings: list[Rendering]) -> None:
    problems = []
    for r in renderings:
        selected = set(exporters_of(r.settings))
        if selected != r.lanes():
            problems.append(f"{r.name}: gpuid would run {sorted(selected)}, not {sorted(r.lanes())}")
        if "EXPORTER_TYPE" in r.settings:  # components turn on their own flag, and so compose
            problems.append(f"{r.name}: sets EXPORTER_TYPE")
        if unknown := set(environment(r.docs, r.workload)) - KNOWN_VARIABLES:
            problems.append(f"{r.name}: variables gpuid does not know: {sorted(unknown)}")
    assert problems == []


def test_each_rendering_has_spool_room_for_every_lane(renderings: list[Rendering]) -> None:
    problems = []
    for r in renderings:
        if "spool" in r.components:
            problems += [f"{r.name}: {p}" for p in spool_shortfalls(r.docs, r.workload)]
        elif "SPOOL_DIR" in r.settings:
            problems.append(f"{r.name}: a spool without the spool component")
        spec = container(r.workload)
        paths = [m["mountPath"] for m in spec["volumeMounts"]]
        names = [v["name"] for v in r.workload["spec"]["template"]["spec"]["volumes"]]
        if len(set(paths)) != len(paths) or len(set(names)) != len(names):
            problems.append(f"{r.name}: a volume or a mount path twice")
        if not {m["name"] for m in spec["volumeMounts"]} <= set(names):
            problems.append(f"{r.name}: a mount without its volume")
    assert problems == []


def test_each_rendering_grants_exec_where_gpuid_scans_and_runs_the_release(
    renderings: list[Rendering],
) -> None:
    problems = []
    for r in renderings:
        settings, name = r.settings, r.name
        execs = {d["metadata"]["namespace"] for d in find(r.docs, "Role") if "pods/exec" in str(d["rules"])}
        if execs != {settings["NAMESPACE"]}:
            problems.append(f"{name}: exec granted in {sorted(execs)}, gpuid scans {settings['NAMESPACE']}")
        [account] = find(r.docs, "ServiceAccount")
        subjects = [
            s for b in find(r.docs, "RoleBinding") + find(r.docs, "ClusterRoleBinding") for s in b["subjects"]
        ]
        if {s["namespace"] for s in subjects} != {account["metadata"]["namespace"]}:
            problems.append(f"{name}: a binding to a ServiceAccount in another namespace")
        if container(r.workload)["image"] != f"{IMAGE}:{VERSION}":
            problems.append(f"{name}: image {container(r.workload)['image']}")
        if settings["CLUSTER_NAME"] != "change-me":  # the placeholder gpuid refuses: users set their own
            problems.append(f"{name}: CLUSTER_NAME={settings['CLUSTER_NAME']}")
        if r.workload["kind"] == "Deployment":
            [pdb] = find(r.docs, "PodDisruptionBudget")
            if (pdb["spec"]["minAvailable"], pdb["spec"].get("unhealthyPodEvictionPolicy")) != (
                1,
                "AlwaysAllow",
            ):
                problems.append(f"{name}: PodDisruptionBudget {pdb['spec']}")
        for monitor in find(r.docs, "ServiceMonitor"):  # no namespaceSelector: it selects its own namespace
            [service] = find(r.docs, "Service")
            if monitor["metadata"]["namespace"] != service["metadata"]["namespace"] or (
                "namespaceSelector" in monitor["spec"]
            ):
                problems.append(f"{name}: the ServiceMonitor does not select gpuid's namespace")
        if ("monitoring" in r.components) != bool(find(r.docs, "ServiceMonitor")):
            problems.append(f"{name}: ServiceMonitor present without the monitoring component, or missing")
    assert problems == []


def test_a_component_listed_twice_adds_nothing_twice_or_is_refused(tmp_path: Path) -> None:
    """Adding a component an overlay already has (overlays/s3 + components/spool) is harmless or loud.

    The patches are strategic merges (lists merge by name and mount path), so a second
    copy changes nothing; a component that brings objects (RBAC, monitoring) is refused by
    kustomize, which never renders an object twice.
    """
    for overlay in WORKLOAD_OVERLAYS:
        once = unordered(
            kustomize(own_overlay(tmp_path, f"{overlay}-once", user_kustomization(f"overlays/{overlay}")))
        )
        for component in components_of(overlay):
            again = own_overlay(
                tmp_path, f"{overlay}-{component}", user_kustomization(f"overlays/{overlay}", [component])
            )
            if (DEPLOYMENT / "components" / component / "kustomization.yaml").read_text().count("resources:"):
                proc = subprocess.run(
                    [tool("kubectl"), "kustomize", str(again)], capture_output=True, text=True, check=False
                )
                assert proc.returncode != 0, (overlay, component)
                assert "already registered id" in proc.stderr, (overlay, component)
            else:
                assert unordered(kustomize(again)) == once, (overlay, component)


def unordered(rendered: str) -> list[Doc]:
    """The objects with the pod's volumes, mounts and variables sorted: their order means nothing."""
    docs = documents(rendered)
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        pod["volumes"].sort(key=lambda v: v["name"])
        for spec in pod["containers"]:
            spec["volumeMounts"].sort(key=lambda m: m["mountPath"])
            spec["env"].sort(key=lambda e: e["name"])
    return docs


@pytest.fixture(scope="module")
def distinct_objects(renderings: list[Rendering]) -> list[Doc]:
    """Every object of every rendering, each distinct one once (most are shared by many renderings)."""
    seen: dict[str, Doc] = {}
    for r in renderings:
        for doc in r.docs:
            seen.setdefault(canonical(doc), doc)
    return list(seen.values())


@pytest.fixture
def validate(monkeypatch: pytest.MonkeyPatch) -> Any:
    """kubernetes-validate's own ``validate`` (what its command line runs), strict.

    The schema files are parsed once instead of once per object: thousands of
    objects take seconds instead of minutes.
    """
    cached = functools.cache(kubernetes_validate.utils.schema_contents)
    monkeypatch.setattr(kubernetes_validate.utils, "schema_contents", cached)
    return functools.partial(kubernetes_validate.utils.validate, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_of_every_rendering_passes_kubernetes_validate(
    version: str, distinct_objects: list[Doc], validate: Any
) -> None:
    built_in = [d for d in distinct_objects if d["kind"] not in CUSTOM_KINDS]
    problems = []
    for doc in built_in:
        try:
            validate(doc, version)
        except kubernetes_validate.utils.ValidationError as e:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message}")
    assert problems == []
    assert {d["kind"] for d in built_in} >= {
        "Deployment",
        "DaemonSet",
        "ConfigMap",
        "Role",
        "PodDisruptionBudget",
    }
    print(f"\nKubernetes {version}: {len(built_in)} distinct objects valid")


def test_the_validation_above_rejects_an_unknown_field(distinct_objects: list[Doc], validate: Any) -> None:
    """A control: the cached, in-process validation is as strict as the command line."""
    [workload, *_] = workloads(distinct_objects)
    broken = json.loads(canonical(workload))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 45
    with pytest.raises(kubernetes_validate.utils.ValidationError, match="terminationGracePeriodSecond"):
        validate(broken, KUBERNETES_VERSIONS[0])


@pytest.mark.slow
def test_gpuid_runs_every_selected_exporter_with_each_rendered_environment(
    renderings: list[Rendering], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each distinct environment once; the starts are shared by worker processes (gpuid's start-up is
    CPU-bound, botocore's S3 client above all), each with its own simulated cluster and event loop."""
    environments: dict[frozenset[tuple[str, str]], tuple[dict[str, str], set[str], str]] = {}
    for r in renderings:
        env = rendered_env(r)
        environments.setdefault(frozenset(env.items()), (env, r.lanes(), r.name))
    starts = [(i, *v) for i, v in enumerate(environments.values())]
    [logging] = {(env["LOG_LEVEL"], env["LOG_FORMAT"]) for env, _, _ in environments.values()}
    # The S3 client reads credentials from the process environment; never the instance metadata service.
    for name in AWS_SDK_VARIABLES:
        monkeypatch.setenv(name, "from-secretKeyRef")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        shares = [starts[w::WORKERS] for w in range(WORKERS)]
        each = functools.partial(start_each, work=tmp_path, logging=logging)
        problems = [p for found in pool.map(each, shares) for p in found]
    print(f"\ngpuid started with {len(starts)} distinct environments of {len(renderings)} renderings")
    assert problems == []
