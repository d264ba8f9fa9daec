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

import asyncio
import functools
import itertools
import json
import multiprocessing
import os
import re
import subprocess
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate.utils
import pytest
import yaml

from gpuid.app import App
from gpuid.config import load_settings
from gpuid.log import configure_logging
from gpuid.sim import SimApiServer, SimCluster, bundled_capture

from .conftest import sample
from .manifests import (
    AWS_SDK_VARIABLES,
    COMPONENTS,
    CUSTOM_KINDS,
    DEPLOYMENT,
    IMAGE,
    KNOWN_VARIABLES,
    KUBERNETES_VERSIONS,
    OVERLAYS,
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
    settings_of,
    spool_shortfalls,
    tool,
    user_kustomization,
    workloads,
)
from .stack import free_port

EXPORTER_COMPONENTS = ("stdout", "s3", "postgres", "http")
WORKLOAD_OVERLAYS = tuple(o for o in OVERLAYS if o != "monitoring")  # monitoring has nothing to add to
NODE, CAPTURE = "gpu-node-1", "gpuid-h100-sxm-x8"
GPUS = len(bundled_capture(CAPTURE).gpu_uuids())
AT_ONCE = 8  # gpuid instances running together in one event loop (much of their time is waiting)
WORKERS = min(os.cpu_count() or 2, 4)  # processes starting gpuid: its start-up is CPU-bound
Start = tuple[int, dict[str, str], set[str], str]  # index, rendered environment, lanes it selects, rendering
# Rendering every combination takes longer than a test's usual minute, in whichever test comes first.
pytestmark = pytest.mark.timeout(600)


@dataclass
class Rendering:
    overlay: str
    extra: tuple[str, ...]  # components added to the overlay's own
    docs: list[Doc]

    @property
    def name(self) -> str:
        return f"{self.overlay} + {', '.join(self.extra) or 'nothing'}"

    @property
    def components(self) -> set[str]:
        return {*components_of(self.overlay), *self.extra}

    @functools.cached_property
    def workload(self) -> Doc:
        [workload] = workloads(self.docs)
        return workload

    @functools.cached_property
    def settings(self) -> dict[str, str]:
        return settings_of(self.docs, self.workload)

    def lanes(self) -> set[str]:
        """The exporters its components select: gpuid's default, stdout, when none does."""
        return {c for c in EXPORTER_COMPONENTS if c in self.components} or {"stdout"}


def combinations() -> list[tuple[str, tuple[str, ...]]]:
    """Each workload overlay with every subset of the components it does not already have."""
    found = []
    for overlay in WORKLOAD_OVERLAYS:
        rest = [c for c in COMPONENTS if c not in components_of(overlay)]
        found += [(overlay, extra) for n in range(len(rest) + 1) for extra in itertools.combinations(rest, n)]
    return found


BATCH = 12  # combinations per kubectl run: its start-up is shared, and kustomize slows down past ~20


def unprefixed(value: Any, prefix: str) -> Any:
    """``value`` with ``prefix`` taken off every string that starts with it."""
    if isinstance(value, dict):
        return {k: unprefixed(v, prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [unprefixed(v, prefix) for v in value]
    return value.removeprefix(prefix) if isinstance(value, str) else value


def render_batch(work: Path, batch: list[tuple[int, Path]]) -> list[list[Doc]]:
    """Render several user overlays in one kubectl run; each one's objects exactly as alone.

    Each overlay is wrapped with the name prefix ``c<i>-`` so that their objects do
    not collide, then the prefix is taken off (names and the references kustomize
    updated with them). The wrapper also drops the Namespace (the same in every
    overlay, and not prefixed): the overlays' own renderings in test_overlays.py have it.
    """
    parent = work / f"batch-{batch[0][0]}"
    for i, overlay in batch:
        wrapper = {
            "resources": [os.path.relpath(overlay, parent / f"w{i}")],
            "namePrefix": f"c{i}-",
            "patches": [
                {"patch": "$patch: delete\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: gpuid\n"}
            ],
        }
        (parent / f"w{i}").mkdir(parents=True)
        (parent / f"w{i}" / "kustomization.yaml").write_text(yaml.safe_dump(wrapper))
    (parent / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [f"w{i}" for i, _ in batch]}))
    rendered: dict[int, list[Doc]] = {i: [] for i, _ in batch}
    for doc in documents(kustomize(parent)):
        i = int(doc["metadata"]["name"].split("-", 1)[0].removeprefix("c"))
        rendered[i].append(unprefixed(doc, f"c{i}-"))
    return [rendered[i] for i, _ in batch]


@pytest.fixture(scope="module")
def renderings(tmp_path_factory: pytest.TempPathFactory) -> list[Rendering]:
    """Every combination as a user's overlay, each rendered once (kubectl runs on every core)."""
    work = tmp_path_factory.mktemp("compose")
    combos = combinations()
    overlays = [
        (i, own_overlay(work, f"c{i}", user_kustomization(f"overlays/{overlay}", extra)))
        for i, (overlay, extra) in enumerate(combos)
    ]
    batches = [overlays[at : at + BATCH] for at in range(0, len(overlays), BATCH)]
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        rendered = [
            docs for batch in pool.map(functools.partial(render_batch, work), batches) for docs in batch
        ]
    return [Rendering(o, extra, docs) for (o, extra), docs in zip(combos, rendered, strict=True)]


def test_a_rendering_in_a_batch_is_the_overlay_rendered_alone(tmp_path: Path) -> None:
    """A control of render_batch: each overlay, batched with the others, renders as by itself."""
    alone = {o: own_overlay(tmp_path, o, user_kustomization(f"overlays/{o}")) for o in WORKLOAD_OVERLAYS}
    batched = render_batch(tmp_path, list(enumerate(alone.values())))
    for (overlay, path), docs in zip(alone.items(), batched, strict=True):
        by_itself = [d for d in documents(kustomize(path)) if d["kind"] != "Namespace"]
        assert sorted(map(canonical, docs)) == sorted(map(canonical, by_itself)), overlay


def canonical(doc: Doc) -> str:
    return json.dumps(doc, sort_keys=True)


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


def rendered_env(r: Rendering) -> dict[str, str]:
    """The container's environment; a Secret's value stands in, NODE_NAME is the node to scan."""
    env = {}
    for name, value in environment(r.docs, r.workload).items():
        if isinstance(value, dict):  # valueFrom: the downward API or a Secret
            env[name] = NODE if name == "NODE_NAME" else f"from-{next(iter(value))}"
        else:
            env[name] = str(value)
    return env


def started_env(env: dict[str, str], index: int, work: Path, kubeconfig: Path, closed: int) -> dict[str, str]:
    """What this test changes in a rendered environment to run it here, and nothing else."""
    started = {
        **env,
        "CLUSTER_NAME": "compose",  # the user's to set: gpuid refuses the base's placeholder
        "KUBECONFIG": str(kubeconfig),
        "SERVER_PORT": "0",
        "SHUTDOWN_GRACE": "0.2s",  # what the down backends did not take is left behind without waiting 20 s
    }
    if "LEASE_NAMESPACE" in env:  # from the downward API: each replica here is a pod of its own namespace
        started |= {"POD_NAME": f"gpuid-{index}", "LEASE_NAMESPACE": f"gpuid-{index}"}
    for path in ("SPOOL_DIR", "BUG_REPORT_DIR"):
        if path in env:
            started[path] = str(work / f"{index}-{path.lower()}")
    # Every backend is down: a loopback port nobody listens on.
    if "S3_BUCKET" in env:
        started |= {"S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}", "S3_REGION": "us-east-1"}
    if "POSTGRES_HOST" in env:
        started |= {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(closed)}
    if "HTTP_ENDPOINT" in env:
        started["HTTP_ENDPOINT"] = f"http://127.0.0.1:{closed}/readings"
    return started


def lanes_in(metrics: str) -> set[str]:
    """The exporters that have a delivery lane: a ``gpuid_export_queue_depth`` series from start-up on."""
    return set(re.findall(r'^gpuid_export_queue_depth\{exporter="([^"]+)"\}', metrics, re.M))


def up_in(metrics: str) -> set[str] | None:
    """The exporters ``gpuid_exporter_up`` reports on; None while gpuid does not expose it."""
    found = set(re.findall(r'^gpuid_exporter_up\{exporter="([^"]+)"\}', metrics, re.M))
    return found if "# TYPE gpuid_exporter_up " in metrics else None


def received_everything(metrics: str, lanes: set[str]) -> bool:
    """Every GPU scanned, and every lane holds or has delivered each record."""
    return sample(metrics, "gpuid_gpus_observed") == GPUS and all(
        sample(metrics, "gpuid_export_success_total", exporter=lane)
        + sample(metrics, "gpuid_export_queue_depth", exporter=lane)
        >= GPUS
        for lane in lanes
    )


async def run_gpuid(env: dict[str, str], session: aiohttp.ClientSession) -> str:
    """Start gpuid in-process, wait until every lane has the scanned records; its /metrics then."""
    app = App(load_settings(env))
    task = asyncio.create_task(app.run(), name="gpuid-under-test")
    metrics = ""
    try:
        async with asyncio.timeout(30):
            while not metrics or not received_everything(metrics, lanes_in(metrics)):
                await asyncio.sleep(0.1)
                assert not task.done(), f"gpuid stopped: {task.result()}"
                if app.server.port is not None:
                    async with session.get(f"http://127.0.0.1:{app.server.port}/metrics") as resp:
                        metrics = await resp.text()
        return metrics
    except TimeoutError:
        gpus = sample(metrics, "gpuid_gpus_observed")
        waiting = {
            lane: sample(metrics, "gpuid_export_queue_depth", exporter=lane) for lane in lanes_in(metrics)
        }
        pytest.fail(f"records did not reach every lane within 30 s: {gpus:.0f} GPUs observed, {waiting}")
    finally:
        app.stop()
        assert await task == 0


def start_each(starts: list[Start], work: Path, logging: tuple[str, str]) -> list[str]:
    """In a worker process: a simulated cluster of its own, gpuid started with each environment; problems."""
    configure_logging(*logging)  # as the rendered settings ask, what gpuid's command line would set up
    return asyncio.run(start_in_cluster(starts, work))


async def start_in_cluster(starts: list[Start], work: Path) -> list[str]:
    cluster = SimCluster()
    cluster.add_node(NODE, capture=CAPTURE)
    cluster.add_pod(f"dp-{NODE}", node=NODE)
    closed = free_port()  # every backend is down: a loopback port nobody listens on
    at_once = asyncio.Semaphore(AT_ONCE)

    async def check(index: int, env: dict[str, str], lanes: set[str], name: str) -> str | None:
        try:
            async with at_once:
                metrics = await run_gpuid(started_env(env, index, work, kubeconfig, closed), session)
        except (Exception, pytest.fail.Exception) as e:  # every environment is tried; all failures reported
            return f"{name}: {e}"
        if lanes_in(metrics) != lanes:
            return f"{name}: lanes {sorted(lanes_in(metrics))}, selected {sorted(lanes)}"
        up = up_in(metrics)  # once gpuid exposes gpuid_exporter_up, it reports on exactly those exporters
        return None if up in (None, lanes) else f"{name}: gpuid_exporter_up for {sorted(up or ())}"

    async with SimApiServer(cluster, bookmark_interval=0.2) as server, aiohttp.ClientSession() as session:
        kubeconfig = server.write_kubeconfig(work / f"kubeconfig-{starts[0][0]}")
        return [p for p in await asyncio.gather(*(check(*start) for start in starts)) if p]


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
