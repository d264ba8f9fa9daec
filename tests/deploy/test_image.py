"""The Dockerfile, checked without Docker: hadolint, and the rules the deployment relies on.

Docker cannot run on the build machines, so nothing is built here; what the
Kubernetes manifests assume of the image (uid 65532, a read-only root
filesystem, ``gpuid`` as entrypoint, every backend installed) is read from
the Dockerfile itself.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib
from pathlib import Path

from gpuid import __version__

from .manifests import ROOT, tool
from .test_release import WORKFLOW, make_image

DOCKERFILE = (ROOT / "Dockerfile").read_text()
OCI_LABELS = ("title", "description", "version", "revision", "licenses")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    pairs = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(DOCKERFILE):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_what_it_should(tmp_path: Path) -> None:
    """A control: unpinned base and pip install with a cache must fail, so the pass above means something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert {"DL3007", "DL3013", "DL3042"} <= set(re.findall(r"DL\d{4}", proc.stdout))


def test_multi_stage_with_a_slim_python_312_runtime_that_installs_nothing() -> None:
    build, final = stages()
    assert build[0][1].startswith("python:3.12-slim AS ")
    assert final[0] == ("FROM", "python:3.12-slim")
    # The runtime stage gets the finished virtualenv and runs nothing: no compilers, no pip, no caches.
    assert [i for i in final if i[0] == "RUN"] == []
    copies = [args for word, args in final if word == "COPY"]
    assert copies == ["--from=build /opt/gpuid /opt/gpuid"]


def test_runs_as_65532_with_gpuid_as_entrypoint_and_no_bytecode_writes() -> None:
    final = stages()[-1]
    assert ("USER", "65532:65532") in final
    assert [json.loads(args) for word, args in final if word == "ENTRYPOINT"] == [["gpuid"]]
    env = " ".join(args for word, args in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PATH=/opt/gpuid/bin:$PATH" in env
    assert ("EXPOSE", "8080") in final


def test_every_backend_extra_is_installed_without_a_pip_cache() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]) - {
        "dev"
    }
    [install] = [args for word, args in stages()[0] if word == "RUN" and "pip install" in args]
    assert "--no-cache-dir" in install
    assert "-c constraints.txt" in install
    [spec] = re.findall(r'"\.\[([^\]]*)\]"', install)
    assert set(spec.split(",")) == extras


def test_oci_labels_carry_this_version() -> None:
    final = stages()[-1]
    labels = " ".join(args for word, args in final if word == "LABEL")
    for name in OCI_LABELS:
        assert f"org.opencontainers.image.{name}=" in labels
    # No default to keep in step: make image and the release workflow pass pyproject.toml's version.
    assert ("ARG", "VERSION") in final
    assert f"--build-arg VERSION={__version__} " in make_image()
    assert "VERSION=${{ needs.check.outputs.version }}" in WORKFLOW.read_text()


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            glob = pattern.lstrip("!").rstrip("/")
            if (
                fnmatch.fnmatch(path, glob)
                or path.startswith(glob + "/")
                or fnmatch.fnmatch(path, glob.replace("**/", ""))
            ):
                result = not negate
        return result

    sources = [s for word, args in stages()[0] if word == "COPY" for s in args.split()[:-1]]
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    for needed in [*sources, readme, "gpuid/app.py"]:
        assert not ignored(needed), f"{needed} is needed by the build but excluded by .dockerignore"
    for private in (
        ".git",
        ".venv",
        "tests/conftest.py",
        "deployment/base/rbac.yaml",
        "gpuid/__pycache__/app.pyc",
    ):
        assert ignored(private), f"{private} should not be sent to the Docker build"
