"""What a release publishes: one version everywhere, a valid workflow that checks it, the image build.

The workflow cannot run here (no Docker engine, no GitHub); it is validated
against GitHub's workflow schema with check-jsonschema (offline: the schema is
vendored in the package), and the script it runs first, which refuses a tag
that is not the package version, is run with good and bad tags.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from gpuid import __version__
from gpuid.metrics import Metrics

from .manifests import DEPLOYMENT, IMAGE, ROOT, VERSION, tool

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
CHECK = ROOT / ".github" / "scripts" / "release_version.py"


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_one_version_in_pyproject_the_image_tag_and_gpuid_build_info() -> None:
    base = yaml.safe_load((DEPLOYMENT / "base" / "kustomization.yaml").read_text())
    [image] = [i for i in base["images"] if i["name"] == "gpuid"]
    build_info = re.search(r'^gpuid_build_info\{version="([^"]+)"\} 1\.0$', Metrics().render().decode(), re.M)
    assert build_info is not None
    assert VERSION == image["newTag"] == build_info[1] == __version__
    assert image["newName"] == IMAGE  # ghcr.io/<the owner of the repository in pyproject.toml's urls>/gpuid


def test_release_workflow_is_a_valid_github_workflow() -> None:
    proc = check_jsonschema(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_jsonschema_rejects_a_broken_workflow(tmp_path: Path) -> None:
    """A control: a misspelt key fails, so the pass above means something."""
    broken = tmp_path / "release.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "run-on:", 1))
    proc = check_jsonschema(broken)
    assert proc.returncode != 0
    assert "run-on" in proc.stdout + proc.stderr


def steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return list(workflow["jobs"][job]["steps"])


def test_a_version_tag_builds_both_platforms_with_attestations_after_the_checks() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads the key "on" as True
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    assert jobs["image"]["needs"] == ["check", "test"]
    assert "make test" in [s.get("run") for s in steps(workflow, "test")]
    [check] = [s for s in steps(workflow, "check") if "release_version.py" in s.get("run", "")]
    assert '"$GITHUB_REF_NAME" "$GITHUB_REPOSITORY_OWNER"' in check["run"]
    uses = [s.get("uses", "").split("@")[0] for s in steps(workflow, "image")]
    assert uses[:4] == [
        "actions/checkout",
        "docker/setup-qemu-action",
        "docker/setup-buildx-action",
        "docker/login-action",
    ]
    [build] = [
        s["with"] for s in steps(workflow, "image") if s.get("uses", "").startswith("docker/build-push")
    ]
    assert build["platforms"].split(",") == ["linux/amd64", "linux/arm64"]
    assert (build["push"], build["sbom"], build["provenance"]) == (True, True, "mode=max")
    assert build["tags"] == "${{ needs.check.outputs.image }}:${{ needs.check.outputs.version }}"
    assert "VERSION=${{ needs.check.outputs.version }}" in build["build-args"]
    assert jobs["image"]["permissions"] == {"contents": "read", "packages": "write"}


def release_check(tag: str, owner: str, tmp_path: Path) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, str(CHECK), tag, owner], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_the_release_check_passes_the_version_tag_and_names_the_image(tmp_path: Path) -> None:
    owner = IMAGE.split("/")[1]
    code, out, err = release_check(f"v{VERSION}", owner.upper(), tmp_path)  # owners may have capitals
    assert code == 0, err
    assert out.splitlines() == [f"version={VERSION}", f"image={IMAGE}"]


def test_the_release_check_refuses_a_tag_that_is_not_the_version(tmp_path: Path) -> None:
    code, out, err = release_check(f"v{VERSION}.1", IMAGE.split("/")[1], tmp_path)
    assert code == 1
    assert out == ""
    assert f"::error::tag v{VERSION}.1 is not v + the version in pyproject.toml ({VERSION})" in err


def test_the_release_check_refuses_manifests_that_name_another_image(tmp_path: Path) -> None:
    """A fork releasing under its own owner must first point the manifests at its image."""
    code, _, err = release_check(f"v{VERSION}", "someone-else", tmp_path)
    assert code == 1
    assert f"names the image {IMAGE}, the release pushes ghcr.io/someone-else/gpuid" in err


def make_image(*args: str) -> str:
    """The commands `make image` would run (make -n: nothing runs, no Docker needed)."""
    # Not what an enclosing make (make test) passes down: its flags and variables.
    outer = ("IMAGE", "PLATFORMS", "PUSH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    env = {k: v for k, v in os.environ.items() if k not in outer}
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "image", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    return " ".join(proc.stdout.replace("\\\n", " ").split())


def test_make_image_builds_this_version_for_this_machine_and_loads_it() -> None:
    machine = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
    command = make_image()
    assert command.startswith(f"docker buildx build --platform linux/{machine} ")
    assert f"--build-arg VERSION={VERSION} " in command
    assert "--build-arg REVISION=$(git rev-parse HEAD)" in command
    assert command.endswith(f"--tag {IMAGE}:{VERSION} --load .")


def test_make_image_pushes_both_platforms_with_attestations_where_told() -> None:
    command = make_image("PUSH=1", "PLATFORMS=linux/amd64,linux/arm64", "IMAGE=registry.example.com/gpuid")
    assert "--platform linux/amd64,linux/arm64 " in command
    assert command.endswith(
        f"--tag registry.example.com/gpuid:{VERSION} --push --sbom=true --provenance=mode=max ."
    )
