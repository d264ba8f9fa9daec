"""The Python package as published: its metadata, what the sdist carries, every dependency declared.

The sdist is built here with the installed setuptools (no network: the
build backend is pinned in constraints.txt and installed by `make test`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .manifests import PROJECT, ROOT, VERSION

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the text PEP 639's Apache-2.0 names.
APACHE_2_0 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def package_files() -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / "gpuid").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_sdist_is_the_whole_package_and_nothing_of_the_repository(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [sdist] = tmp_path.glob("gpuid-*.tar.gz")
    root = f"gpuid-{VERSION}/"
    with tarfile.open(sdist) as tar:
        members = {m.name.removeprefix(root) for m in tar.getmembers() if m.isfile()}
        metadata, license_text = (tar.extractfile(root + name).read() for name in ("PKG-INFO", "LICENSE"))
    tops = {m.split("/", 1)[0] for m in members}
    assert tops == {
        "PKG-INFO",
        "pyproject.toml",
        "setup.cfg",
        "README.md",
        "LICENSE",
        "MANIFEST.in",
        "gpuid",
        "gpuid.egg-info",
    }
    assert {m for m in members if m.startswith("gpuid/")} == package_files()  # the package, whole
    assert license_text == (ROOT / "LICENSE").read_bytes()
    fields = re.findall(r"^([\w-]+): (.*)$", metadata.decode().split("\n\n", 1)[0], re.M)
    assert ("License-Expression", "Apache-2.0") in fields
    assert ("License-File", "LICENSE") in fields
    assert "License" not in dict(fields)  # the deprecated free-text field
    assert float(dict(fields)["Metadata-Version"]) >= 2.4


def test_license_metadata_is_pep_639_with_a_bounded_build_backend() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert not [c for c in PROJECT.get("classifiers", []) if c.startswith("License ::")]
    [backend] = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    assert backend.name == "setuptools"
    assert backend.specifier.contains("77")  # the first with PEP 639
    assert not backend.specifier.contains("76.9")
    assert any(s.operator == "<" for s in backend.specifier)  # bounded
    installed = importlib.metadata.version("setuptools")
    assert backend.specifier.contains(installed), f"the sdist test builds with setuptools {installed}"


def test_license_is_the_apache_2_0_text() -> None:
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0


def imported_distributions() -> set[str]:
    """Distributions whose modules gpuid imports (the standard library and gpuid itself left out)."""
    modules = set()
    for path in (ROOT / "gpuid").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    providers = importlib.metadata.packages_distributions()
    third_party = modules - set(sys.stdlib_module_names) - {"gpuid"}
    missing = sorted(m for m in third_party if m not in providers)
    assert missing == [], f"imported but not installed: {missing}"
    return {canonicalize_name(d) for m in third_party for d in providers[m]}


def test_every_imported_package_is_declared_and_every_declared_one_imported() -> None:
    extras = PROJECT["optional-dependencies"]
    runtime = [*PROJECT["dependencies"], *(r for name, reqs in extras.items() if name != "dev" for r in reqs)]
    declared = {canonicalize_name(Requirement(r).name) for r in runtime}
    imported = imported_distributions()
    assert sorted(imported - declared) == []  # e.g. aiohttp, imported by the http exporter
    assert sorted(declared - imported) == []  # nothing installed for nothing
