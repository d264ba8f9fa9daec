"""The deployment docs stay true: their jq recipes run on real gpuid logs, their overlays render."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

import yaml

from tests.test_docs import TESTED_ON_OUTPUT, jq_recipes

from .conftest import HEALTHY_NODES, Live
from .manifests import (
    IMAGE,
    ROOT,
    VERSION,
    container,
    documents,
    environment,
    exporters_of,
    find,
    kustomize,
    one,
    own_overlay,
    settings_of,
    spool_shortfalls,
    tool,
    user_kustomization,
    workloads,
)

LOG_RECIPES = {
    "leader": "Which replica scans",
    "summary": "A summary: records, nodes, failed scans, errors",
    "problems": "Warnings and errors, with the node or exporter they concern",
    "per_node": "GPUs in each node's latest scan (every record of one scan carries the same `observed_at`)",
    "bug_reports": "Bug reports collected or failed",
}


def docs() -> str:
    """Every page a user reads: the README and docs/."""
    return "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def test_every_log_recipe_runs_in_one_of_the_tests() -> None:
    tested = set(LOG_RECIPES.values()) | set(TESTED_ON_OUTPUT)  # here, and in tests/test_docs.py
    assert set(jq_recipes("logs.md")) == tested


def test_verify_recipes_work_on_real_gpuid_logs(live: Live) -> None:
    text = live.log.read_text()
    merged = text[: text.rindex("\n") + 1]  # complete lines only: gpuid is still writing
    assert all(json.loads(line) for line in merged.splitlines())  # kubectl logs | jq needs JSON on every line
    recipes = jq_recipes("logs.md")
    leader, summary, problems, per_node, bug_reports = (
        subprocess.run(
            [tool("jq"), *recipes[title][1:]], input=merged, capture_output=True, text=True, check=True
        ).stdout
        for title in LOG_RECIPES.values()
    )
    assert [row.split("\t")[1:] for row in leader.splitlines()] == [
        ["waiting to become the leader", "gpuid-0"],
        ["became the leader", "gpuid-0"],
    ]
    # What stdout carries: the full shared spool (the http exporter is down) drops some records there too.
    readings = [r for r in map(json.loads, merged.splitlines()) if r["event"] == "gpu_reading"]
    nodes = {r["node"] for r in readings}
    assert readings
    assert nodes <= {*(f"gpu-{i}" for i in range(HEALTHY_NODES)), "gb200"}
    counts = json.loads(summary)
    assert (counts["records"], counts["nodes"]) == (len(readings), len(nodes))
    assert counts["failed_scans"] >= 1
    assert counts["errors"] >= 1
    rows = [row.split("\t") for row in problems.splitlines()]
    assert any(r[1:3] == ["pod scan failed", "broken"] and "exit code 9" in r[3] for r in rows)
    assert any(r[1:3] == ["export failed, will retry", "http"] for r in rows)
    latest = dict(row.split("\t") for row in per_node.splitlines())
    assert latest == {node: ("4" if node == "gb200" else "8") for node in nodes}  # one scan each, whole
    [report] = [row.split("\t") for row in bug_reports.splitlines()]
    assert report[:3] == ["gb200", "r1", "bug report collected"]
    assert re.fullmatch(r"nvidia-bug-report-gb200-r1-\d{8}_\d{6}\.log\.gz", report[3])


def own_overlays() -> dict[str, str]:
    """Every "my-gpuid" overlay the docs show, dedented (some sit in a numbered list), by its first line."""
    blocks = re.findall(r"```yaml\n(.*?)\n *```", docs(), flags=re.S)
    examples = (textwrap.dedent(b) for b in blocks if "my-gpuid/kustomization.yaml" in b)
    return {example.splitlines()[0]: example for example in examples}


def test_every_documented_own_overlay_renders_names_its_cluster_and_ends_with_the_wiring(
    tmp_path: Path,
) -> None:
    examples = own_overlays()
    assert len(examples) >= 4
    for i, (first, example) in enumerate(examples.items()):
        kustomization = yaml.safe_load(example)
        assert list(kustomization)[-1] == "transformers", f"{first}: the wiring is not the last line"
        rendered = documents(kustomize(own_overlay(tmp_path / str(i), "my-gpuid", kustomization)))
        [workload] = workloads(rendered)
        settings = settings_of(rendered, workload)
        assert settings["CLUSTER_NAME"] == "prod-us-east-1", first
        execs = {d["metadata"]["namespace"] for d in find(rendered, "Role") if "pods/exec" in str(d["rules"])}
        assert execs == {settings["NAMESPACE"]}, first


def test_the_documented_full_overlay_renders_with_its_settings(tmp_path: Path) -> None:
    [example] = [e for e in own_overlays().values() if "images:" in e and "S3_BUCKET" in e]
    rendered = documents(kustomize(own_overlay(tmp_path, "my-gpuid", yaml.safe_load(example))))
    [workload] = workloads(rendered)
    settings = settings_of(rendered, workload)
    assert container(workload)["image"] == f"registry.example.com/gpuid:{VERSION}"
    assert one(rendered, "ClusterRole", "gpuid-node-labels")
    assert spool_shortfalls(rendered, workload) == []
    assert exporters_of(settings) == ("s3", "postgres")
    assert settings["NAMESPACE"] == "nvidia-gpu-operator"
    assert {
        d["metadata"]["namespace"]
        for d in rendered
        if d["kind"] in ("Deployment", "Service", "ServiceMonitor")
    } == {"gpu-inventory"}


def test_the_documented_mirror_is_one_images_entry(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text.split("### Mirroring it into a private registry", 1)[1].split("\n### ", 1)[0]
    [mirror] = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)\n```", section, flags=re.S)]
    assert set(mirror) == {"images"}
    for base in ("stdout", "daemonset"):
        overlay = own_overlay(tmp_path / base, "mine", user_kustomization(f"overlays/{base}", **mirror))
        [workload] = workloads(documents(kustomize(overlay)))
        assert container(workload)["image"] == f"registry.example.com/gpuid:{VERSION}"
    # The copy commands copy every platform, of this release's image.
    assert f"crane copy {IMAGE}:{VERSION} registry.example.com/gpuid:{VERSION}" in section
    assert (
        f"skopeo copy --all docker://{IMAGE}:{VERSION} docker://registry.example.com/gpuid:{VERSION}"
        in section
    )
    assert set(re.findall(r"ghcr\.io/[\w-]+/gpuid:\d[\w.]*", text)) == {f"{IMAGE}:{VERSION}"}


def test_components_combine_with_the_daemonset(tmp_path: Path) -> None:
    """Per-node agents with S3 and a spool, bug reports and node labels: one DaemonSet with all of it."""
    components = ("s3", "spool", "bug-reports", "node-labels")
    overlay = own_overlay(tmp_path, "mine", user_kustomization("overlays/daemonset", components))
    rendered = documents(kustomize(overlay))
    [workload] = workloads(rendered)
    assert workload["kind"] == "DaemonSet"
    env = environment(rendered, workload)
    assert exporters_of(settings_of(rendered, workload)) == ("s3",)
    assert env["LEADER_ELECTION"] == "false"
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "gpuid-s3"
    mounts = {m["mountPath"] for m in container(workload)["volumeMounts"]}
    assert mounts == {"/tmp", env["SPOOL_DIR"], env["SPOOL_DIR"] + "/s3", env["BUG_REPORT_DIR"]}
