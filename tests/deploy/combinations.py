"""Every combination of the deployment's components over its overlays, as users' overlays, rendered.

Each combination is written as a user's overlay (docs/deploy.md: an overlay, more
components, the wiring last) and rendered by the real kubectl. Several go through
one kubectl run (``render_batch``): its start-up and kustomize's schema loading are
then paid once for many, and the objects of each come out exactly as alone.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .manifests import (
    COMPONENTS,
    OVERLAYS,
    Doc,
    components_of,
    documents,
    kustomize,
    own_overlay,
    settings_of,
    user_kustomization,
    workloads,
)

EXPORTER_COMPONENTS = ("stdout", "s3", "postgres", "http")
WORKLOAD_OVERLAYS = tuple(o for o in OVERLAYS if o != "monitoring")  # monitoring has nothing to add to
BATCH = 12  # combinations per kubectl run: its start-up is shared, and kustomize slows down past ~20


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


def render_all(work: Path) -> list[Rendering]:
    """Every combination as a user's overlay in ``work``, each rendered once (kubectl on every core)."""
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


def canonical(doc: Doc) -> str:
    return json.dumps(doc, sort_keys=True)
