"""The alert rules: promtool checks and unit tests, one Operator copy, a runbook for each."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .manifests import DEPLOYMENT, REPOSITORY, ROOT, one, render, tool

RULES = DEPLOYMENT / "prometheus" / "gpuid.rules.yaml"
RULE_TESTS = DEPLOYMENT / "prometheus" / "gpuid.rules.test.yaml"
RUNBOOKS = ROOT / "docs" / "troubleshooting.md"


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, check=False)


def test_promtool_check_rules_passes() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_stays_silent() -> None:
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} is never shown to fire"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} is never shown to stay silent"


def test_promtool_unit_tests_fail_when_a_rule_changes(tmp_path: Path) -> None:
    """A control: the unit tests pin the rules (here, a threshold), so they catch a careless edit."""
    changed = RULES.read_text().replace(
        "increase(gpuid_watch_restarts_total[10m])) > 3", "increase(gpuid_watch_restarts_total[10m])) > 30"
    )
    assert changed != RULES.read_text()
    (tmp_path / RULES.name).write_text(changed)
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    proc = promtool("test", "rules", str(tmp_path / RULE_TESTS.name))
    assert proc.returncode != 0
    assert "GpuidWatchRestarting" in proc.stdout + proc.stderr


def test_the_prometheus_rule_of_the_monitoring_overlay_is_the_rules_file() -> None:
    rule = one(render("monitoring"), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert rule["for"]


def github_anchors(markdown: str) -> dict[str, str]:
    """Each heading's anchor as GitHub makes it (lowercase, spaces to dashes), with its section's text."""
    sections = re.split(r"(?m)^#+ (.+)$", markdown)
    return {
        re.sub(r"[^\w\- ]", "", title).lower().replace(" ", "-"): body.strip()
        for title, body in zip(sections[1::2], sections[2::2], strict=True)
    }


def test_every_runbook_url_points_at_a_section_of_the_troubleshooting_docs() -> None:
    sections = github_anchors(RUNBOOKS.read_text())
    page = f"{REPOSITORY}/blob/main/docs/troubleshooting.md"
    for rule in alert_rules():
        url, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert url == page, rule["alert"]
        assert anchor == rule["alert"].lower()
        assert len(sections.get(anchor, "")) > 100, (
            f"{rule['alert']}: no runbook under #{anchor} in {RUNBOOKS.name}"
        )


def test_the_exporter_down_alert_fires_on_the_exporter_up_gauge() -> None:
    """A backend outage no longer fails readiness (drains and rollouts go on): this alert reports it."""
    [rule] = [r for r in alert_rules() if r["alert"] == "GpuidExporterDown"]
    assert (rule["expr"], rule["for"], rule["labels"]["severity"]) == (
        "gpuid_exporter_up == 0",
        "10m",
        "warning",
    )


def test_every_alert_has_a_runbook_line_in_the_docs() -> None:
    docs = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    rows = [line for line in docs.splitlines() if line.startswith("| `Gpuid")]
    for rule in alert_rules():
        row = f"| `{rule['alert']}` | {rule['labels']['severity']} |"
        assert any(r.startswith(row) for r in rows), f"no runbook row starting {row}"
