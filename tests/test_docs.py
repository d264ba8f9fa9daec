"""The docs are the user's manual: their settings, defaults, metrics, fields and jq recipes stay true."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from gpuid.metrics import Metrics
from gpuid.options import OPTIONS
from gpuid.records import CHANGE_FIELD_NAMES, FIELD_NAMES
from tests.support.app import GB200, H100, Sim, add_gpu_node

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text()
METRICS = (DOCS / "metrics.md").read_text()
RECORDS = (DOCS / "records.md").read_text()


TESTED_ON_OUTPUT = (  # the recipes of logs.md this module runs; tests/deploy runs the others
    "Errors only",
    "One line per GPU: node, UUID, serial",
    "GPUs in each node's latest scan (every record of one scan carries the same `observed_at`)",
    "Failed scans with their node, pod and reason",
)


def jq_recipes(page: str) -> dict[str, list[str]]:
    """Every ``kubectl ... | jq`` recipe of a docs page, by the sentence that introduces it, as jq's argv."""
    text = (DOCS / page).read_text()
    found = re.findall(r"^([^\n]+):\n\n```sh\n(kubectl [^\n]*?\| jq [^\n]*)\n```", text, flags=re.M)
    return {title: shlex.split(command.split("| ", 1)[1]) for title, command in found}


def test_every_setting_is_documented() -> None:
    missing = [o.env for o in OPTIONS if f"| `{o.env}` |" not in CONFIGURATION]
    assert missing == []


def test_documented_defaults_are_the_real_ones() -> None:
    """The first table row of each variable shows its default: `value`, or words when it has none."""
    defaults = {o.env: o.default for o in OPTIONS}
    seen: dict[str, str] = {}
    for env, cell in re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", CONFIGURATION, flags=re.M):
        if env in defaults and env not in seen:
            seen[env] = cell.strip()
    for env, cell in seen.items():
        code = re.fullmatch(r"`([^`]*)`", cell)
        if code:
            assert code.group(1) == defaults[env], env
        else:
            assert defaults[env] == "", f"{env}: the docs say {cell!r}, the default is {defaults[env]!r}"


def test_every_metric_is_documented() -> None:
    names = set()
    for family in Metrics().registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        names.add(family.name + suffix)
    missing = sorted(n for n in names if n.startswith("gpuid_") and f"| `{n}` |" not in METRICS)
    assert missing == []
    assert {"process_resident_memory_bytes", "python_info"} <= names  # the standard collectors, too
    assert "`process_*`" in METRICS
    assert "`python_*`" in METRICS


def test_every_record_field_is_documented_in_order() -> None:
    table = RECORDS.split("Serial-like values", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert documented == list(FIELD_NAMES)


def test_every_gpu_changed_field_is_documented_in_order() -> None:
    fleet = (ROOT / "docs" / "fleet.md").read_text()
    table = fleet.split("### The `gpu_changed` record", 1)[1].split("\n\n#", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert documented == ["event", *CHANGE_FIELD_NAMES]


async def test_jq_recipes_work_on_real_gpuid_output(sim: Sim) -> None:
    add_gpu_node(sim, "n1", H100)
    add_gpu_node(sim, "n2", GB200)
    add_gpu_node(sim, "bad", GB200)
    sim.cluster.set_exec("dp-bad", exit_code=3, stderr=b"Failed to initialize NVML")
    env = {**os.environ, "CLUSTER_NAME": "jq", "KUBECONFIG": str(sim.kubeconfig), "SERVER_PORT": "0"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuid",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[bytes] = []
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while sum(b'"gpu_reading"' in ln for ln in lines) < 12 or not any(
            b"pod scan failed" in ln for ln in lines
        ):
            lines.append(await proc.stdout.readline())
    proc.terminate()
    rest, _ = await proc.communicate()
    merged = b"".join(lines) + rest  # what `kubectl logs` shows: both streams
    assert all(json.loads(line) for line in merged.splitlines())

    recipes = jq_recipes("logs.md")
    errors, per_gpu, per_node, failed = (
        subprocess.run(recipes[title], input=merged, capture_output=True, check=True).stdout.decode()
        for title in TESTED_ON_OUTPUT
    )
    assert errors.strip()
    assert all(json.loads(line)["level"] == "error" for line in errors.splitlines())
    rows = [line.split("\t") for line in per_gpu.splitlines()]
    assert len(rows) == 12
    assert ["n1", "GPU-ab6ab95d-8259-5551-5962-e4a7a710fbae", "1652923034028"] in rows
    assert sorted(per_node.splitlines()) == ["n1\t8", "n2\t4"]
    first_failure = failed.splitlines()[0].split("\t")
    assert first_failure[:3] == ["bad", "gpu-operator/dp-bad", "exec_error"]
    assert "exit code 3" in first_failure[3]


def test_every_link_between_the_docs_resolves() -> None:
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS.glob("*.md")]
    links = [(page, t) for page in pages for t in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text())]
    assert [f"{page.name} -> {t}" for page, t in links if not (page.parent / t).exists()] == []
