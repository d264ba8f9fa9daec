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
from .manifests import ROOT, environment, one, render_dir, tool, workloads

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


def own_overlays() -> list[str]:
    """Every "my-gpuid" overlay the docs show, dedented (some sit in a numbered list)."""
    blocks = re.findall(r"```yaml\n(.*?)\n *```", docs(), flags=re.S)
    return list(dict.fromkeys(textwrap.dedent(b) for b in blocks if "my-gpuid/kustomization.yaml" in b))


def render_own(example: str, tmp_path: Path) -> list[dict[str, object]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "gpuid").symlink_to(ROOT)  # the example sits next to a checkout named gpuid
    (tmp_path / "my-gpuid").mkdir()
    (tmp_path / "my-gpuid" / "kustomization.yaml").write_text(example)
    return render_dir(tmp_path / "my-gpuid")


def test_every_documented_own_overlay_renders_and_names_its_cluster(tmp_path: Path) -> None:
    examples = own_overlays()
    assert len(examples) >= 2
    for i, example in enumerate(examples):
        rendered = render_own(example, tmp_path / str(i))
        [workload] = workloads(rendered)
        assert environment(rendered, workload)["CLUSTER_NAME"] == "prod-us-east-1"


def test_the_documented_own_overlay_renders_with_its_settings(tmp_path: Path) -> None:
    [example] = [e for e in own_overlays() if "S3_BUCKET" in e]
    rendered = render_own(example, tmp_path)
    [workload] = workloads(rendered)
    env = environment(rendered, workload)
    assert (env["CLUSTER_NAME"], env["EXPORTER_TYPE"], env["S3_BUCKET"], env["NODE_LABELS"]) == (
        "prod-us-east-1",
        "s3",
        "gpu-inventory",
        "true",
    )
    assert (
        workload["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/gpuid:0.1.0"
    )
    assert one(rendered, "ClusterRole", "gpuid-node-labels")


def test_components_combine_with_the_daemonset(tmp_path: Path) -> None:
    """Per-node agents with S3 and a spool, bug reports and node labels: one DaemonSet with all of it."""
    (tmp_path / "gpuid").symlink_to(ROOT)  # kustomize wants relative paths
    (tmp_path / "mine").mkdir()
    components = ("s3", "spool", "bug-reports", "node-labels")
    overlay = {
        "resources": ["../gpuid/deployment/overlays/daemonset"],
        "components": [f"../gpuid/deployment/components/{c}" for c in components],
    }
    (tmp_path / "mine" / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    rendered = render_dir(tmp_path / "mine")
    [workload] = workloads(rendered)
    assert workload["kind"] == "DaemonSet"
    env = environment(rendered, workload)
    assert env["EXPORTER_TYPE"] == "s3"
    assert env["LEADER_ELECTION"] == "false"
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "gpuid-s3"
    mounts = {m["mountPath"] for m in workload["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts == {"/tmp", env["SPOOL_DIR"], env["BUG_REPORT_DIR"]}
