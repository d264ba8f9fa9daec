#!/usr/bin/env python3
"""Check a release tag against the repository before anything is built; print what to publish.

A tag vX.Y.Z releases pyproject.toml's version X.Y.Z as ghcr.io/<owner>/gpuid:X.Y.Z,
and the manifests of that tag (deployment/base/kustomization.yaml, images:) must
already name exactly that image, or users applying them would pull another one.
Prints ``version=`` and ``image=`` lines for $GITHUB_OUTPUT; on a mismatch, prints
one error per problem and exits 1.

Usage: release_version.py <tag> <repository owner>
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATION = "deployment/base/kustomization.yaml"
# The base's images: entry for gpuid (the runner's Python has no YAML parser).
IMAGE_ENTRY = re.compile(r"^  - name: gpuid\n    newName: (\S+)\n    newTag: (\S+)$", re.M)


def problems(tag: str, owner: str) -> tuple[str, str, list[str]]:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    image = f"ghcr.io/{owner.lower()}/gpuid"  # registry paths are lowercase
    found = []
    if tag != f"v{version}":
        found.append(f"tag {tag} is not v + the version in pyproject.toml ({version})")
    entry = IMAGE_ENTRY.search((ROOT / KUSTOMIZATION).read_text())
    if entry is None:
        found.append(f"{KUSTOMIZATION} has no images: entry for gpuid with newName and newTag")
    else:
        if entry[1] != image:
            found.append(f"{KUSTOMIZATION} names the image {entry[1]}, the release pushes {image}")
        if entry[2] != version:
            found.append(f"{KUSTOMIZATION} tags the image {entry[2]}, the release is {version}")
    return version, image, found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    version, image, found = problems(*argv)
    for problem in found:
        print(f"::error::{problem}", file=sys.stderr)
    if found:
        return 1
    print(f"version={version}")
    print(f"image={image}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
