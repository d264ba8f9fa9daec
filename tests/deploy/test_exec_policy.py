"""The exec policy as deployed: in every overlay, unchanged, fitting each overlay's settings.

Schema validation for 1.30 and the newest version happens with every other
object in test_overlays.py; here the policy is evaluated (CEL, see
tests/support/execpolicy.py) against what each overlay configures gpuid to
do, and the two kustomizations docs/security.md shows (a knob, and leaving the
policy out on Kubernetes 1.29) are rendered and checked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from gpuid.sim.admission import admission_request, connect_options
from gpuid.smi.commands import XML_COMMAND, bug_report_command
from tests.support.execpolicy import POLICY_FILE, ExecPolicy

from .manifests import (
    OVERLAYS,
    ROOT,
    WITHOUT_EXEC_POLICY,
    Doc,
    container,
    find,
    render,
    render_dir,
    settings_of,
    tool,
    workloads,
)

POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
WITH_WORKLOADS = [o for o in OVERLAYS if o != "monitoring"]  # monitoring is applied beside one of these
REPORT = "nvidia-bug-report-gpu-node-1-r1-20250101_120000.log"


def decide(policy: ExecPolicy, user: str, namespace: str, container: str, command: list[str]) -> str | None:
    options = connect_options("exec", {"container": container, "stdout": "true"}, command)
    return policy.denial(admission_request(user, namespace, "pod", "exec", options), options)


def service_account(workload: Doc) -> str:
    pod = workload["spec"]["template"]["spec"]
    return f"system:serviceaccount:{workload['metadata']['namespace']}:{pod['serviceAccountName']}"


@pytest.mark.parametrize("overlay", WITH_WORKLOADS)
def test_every_overlay_with_gpuid_in_it_ships_the_policy_unchanged(overlay: str) -> None:
    shipped = [d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d]
    rendered = [d for d in render(overlay) if d["kind"] in POLICY_KINDS]
    assert rendered == shipped


def test_the_monitoring_overlay_adds_no_second_copy() -> None:
    assert [d for d in render("monitoring") if d["kind"] in POLICY_KINDS] == []


@pytest.mark.parametrize("overlay", WITH_WORKLOADS)
def test_the_policy_admits_what_each_overlay_configures_gpuid_to_run_and_nothing_else(overlay: str) -> None:
    docs = render(overlay)
    policy = ExecPolicy(docs)
    [workload] = workloads(docs)
    user, settings = service_account(workload), settings_of(docs, workload)
    assert container(workload)["name"] == "gpuid"
    scans = (settings["NAMESPACE"], settings["CONTAINER"])
    assert decide(policy, user, *scans, XML_COMMAND) is None
    assert decide(policy, user, *scans, ["sh", "-c", "id"]) is not None  # the policy applies to this user
    if settings.get("BUG_REPORT_ENABLED") == "true":
        drivers = (settings.get("DRIVER_NAMESPACE") or settings["NAMESPACE"], settings["DRIVER_CONTAINER"])
        assert decide(policy, user, *drivers, bug_report_command(REPORT, 300)) is None


def test_the_policy_fails_closed_and_watches_only_connects() -> None:
    policy, binding = (d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d)
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    [rule] = spec["matchConstraints"]["resourceRules"]
    assert rule["operations"] == ["CONNECT"]
    assert set(rule["resources"]) == {"pods/exec", "pods/attach", "pods/portforward"}
    assert binding["spec"] == {"policyName": "gpuid-exec", "validationActions": ["Deny"]}
    assert "matchResources" not in binding["spec"]  # every namespace: exec elsewhere is denied too
    assert all(
        v["reason"] == "Forbidden" and v["message"].startswith("gpuid-exec: ") for v in spec["validations"]
    )


def documented(marker: str) -> str:
    text = (ROOT / "docs" / "security.md").read_text()
    [block] = [b for b in re.findall(r"```yaml\n(.*?)\n```", text, flags=re.S) if marker in b]
    return block


def rendered_example(tmp_path: Path, kustomization: str) -> list[Doc]:
    (tmp_path / "gpuid").symlink_to(ROOT)  # the examples sit next to a checkout named gpuid
    (tmp_path / "my-gpuid").mkdir()
    (tmp_path / "my-gpuid" / "kustomization.yaml").write_text(kustomization)
    return render_dir(tmp_path / "my-gpuid")


def test_the_documented_knobs_move_the_policy_with_gpuid(tmp_path: Path) -> None:
    """NAMESPACE moves the policy through the wiring; the documented patch sets the containers."""
    docs = rendered_example(tmp_path, documented("nvidia-gpu-operator"))
    policy = ExecPolicy(docs)
    [workload] = workloads(docs)
    user = service_account(workload)
    assert decide(policy, user, "nvidia-gpu-operator", "nvidia-device-plugin-ctr", XML_COMMAND) is None
    denied = decide(policy, user, "gpu-operator", "nvidia-device-plugin-ctr", XML_COMMAND)
    assert denied is not None
    assert "namespace" in denied
    other = decide(policy, user, "nvidia-gpu-operator", "nvidia-device-plugin", XML_COMMAND)
    assert other is not None
    assert "containers" in other


def test_the_documented_overlay_for_kubernetes_1_29_has_no_policy_and_validates(tmp_path: Path) -> None:
    docs = rendered_example(tmp_path, documented("(Kubernetes 1.29)"))
    assert find(docs, "ValidatingAdmissionPolicy") == find(docs, "ValidatingAdmissionPolicyBinding") == []
    assert workloads(docs)
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", WITHOUT_EXEC_POLICY, str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert len(re.findall(r"passed for resource", report)) == len(docs)


def test_the_policy_itself_would_not_validate_against_1_29(tmp_path: Path) -> None:
    """Why the component must be left out there: 1.29 has no admissionregistration.k8s.io/v1 policy."""
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", WITHOUT_EXEC_POLICY, str(POLICY_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Couldn't find schema for kind ValidatingAdmissionPolicy" in proc.stdout + proc.stderr
