"""Every overlay renders with kubectl, passes the Kubernetes schemas and sets only what gpuid knows.

Combinations of components over the overlays, and gpuid started with each, are in test_compose.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .manifests import (
    COMPONENTS,
    CUSTOM_KINDS,
    DEPLOYMENT,
    KNOWN_VARIABLES,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    components_of,
    environment,
    find,
    render,
    render_text,
    tool,
    workloads,
)

SECRET_LIKE = re.compile(r"PASSWORD|TOKEN|SECRET|DSN|ACCESS_KEY")


def test_every_overlay_and_component_directory_is_tested() -> None:
    on_disk = {p.name for p in (DEPLOYMENT / "overlays").iterdir() if p.is_dir()}
    assert on_disk == set(OVERLAYS)
    # exec-policy is in every overlay that runs gpuid (tests/deploy/test_exec_policy.py)
    everywhere = {"exec-policy"}
    assert {p.name for p in (DEPLOYMENT / "components").iterdir() if p.is_dir()} == set(
        COMPONENTS
    ) | everywhere
    assert {c for o in OVERLAYS for c in components_of(o)} <= set(COMPONENTS) | everywhere


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_overlays_pass_kubernetes_validate_strict(version: str, tmp_path: Path) -> None:
    files = []
    for overlay in OVERLAYS:
        files.append(tmp_path / f"{overlay}.yaml")
        files[-1].write_text(render_text(overlay))
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", version, *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    passed = re.findall(r"passed for resource (\w+)/", report)
    unchecked = set(re.findall(r"Couldn't find schema for kind (\w+)", report))
    built_in = [d["kind"].lower() for o in OVERLAYS for d in render(o) if d["kind"] not in CUSTOM_KINDS]
    assert sorted(passed) == sorted(built_in)  # every built-in object was checked, and passed
    assert unchecked == CUSTOM_KINDS


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The validator is really strict: a typo in a field name fails (so the test above means something)."""
    broken = render_text("stdout").replace("terminationGracePeriodSeconds", "terminationGracePeriodSecond")
    (tmp_path / "broken.yaml").write_text(broken)
    proc = subprocess.run(
        [
            tool("kubernetes-validate"),
            "--strict",
            "-k",
            KUBERNETES_VERSIONS[0],
            str(tmp_path / "broken.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "terminationGracePeriodSecond" in proc.stdout + proc.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_environment_variable_is_one_gpuid_knows(overlay: str) -> None:
    docs = render(overlay)
    for workload in workloads(docs):
        unknown = sorted(set(environment(docs, workload)) - KNOWN_VARIABLES)
        assert unknown == [], f"{overlay}: {workload['kind']} sets variables gpuid does not know"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_inlined(overlay: str) -> None:
    docs = render(overlay)
    assert find(docs, "Secret") == []
    for workload in workloads(docs):
        for name, value in environment(docs, workload).items():
            if SECRET_LIKE.search(name):
                assert isinstance(value, dict), f"{name} must come from a Secret, not a literal"
                assert set(value) == {"secretKeyRef"}, f"{name} must come from a secretKeyRef"
