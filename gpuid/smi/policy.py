"""The admission policy narrowing gpuid's exec right to its own command lines, rendered from commands.py.

RBAC can grant ``pods/exec`` in a namespace but cannot say which command: with
gpuid's token alone, anyone could run anything in the GPU Operator's pods,
the privileged driver containers included. A ValidatingAdmissionPolicy
(Kubernetes 1.30+) sees every exec request as a ``PodExecOptions`` object and
can allow only the exact command lines in ``commands.py``. This module writes
that policy, so the two cannot drift apart::

    python -m gpuid.smi.policy > deployment/components/exec-policy/policy.yaml

and a test fails when the checked-in file differs from this output. Each
argument of a command line is matched exactly, except where it carries the
bug report's file name or the script's time limit: there a regex anchored at
both ends allows exactly ``REPORT_NAME`` (no ``/``, no shell metacharacter) or
digits. Regexes are written in the subset RE2 (CEL's ``matches``) and Python
share, and without backslashes, so they read the same in YAML, CEL and here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence

from gpuid.smi.commands import (
    LIST_COMMAND,
    REPORT_NAME,
    XML_COMMAND,
    bug_report_command,
    checksum_command,
    cleanup_command,
    download_command,
)

POLICY = "gpuid-exec"
# The ServiceAccount of the central Deployment and of the per-node agents (deployment/base).
SERVICE_ACCOUNTS = ("system:serviceaccount:gpuid:gpuid",)
NAMESPACE = "gpu-operator"  # NAMESPACE and DRIVER_NAMESPACE in the overlays
CONTAINERS = ("nvidia-device-plugin", "nvidia-driver-ctr")  # CONTAINER and DRIVER_CONTAINER

# Stand-ins for the parts that vary; each must appear only where that part goes.
_SAMPLE_NAME = "nvidia-bug-report-node-7-20240131_235959.log"
_SAMPLE_SECONDS = 86399
SECONDS = "[1-9][0-9]{0,9}"  # `timeout -s KILL <seconds>`: BUG_REPORT_TIMEOUT rounded up
_SPECIAL = frozenset(".$*+?()|{}")  # written as a one-character class: [.] [$] ...
_NOT_IN_CEL = frozenset("\\'\n")  # would need escaping in a CEL string: refused, not guessed
_NOT_IN_REGEX = frozenset("\\^[]")  # likewise in a regex

Arg = tuple[bool, str]  # (is a regex, exact text or anchored pattern)


def command_lines() -> dict[str, tuple[Arg, ...]]:
    """Every command line gpuid runs, by what it does, each argument exact or a pattern."""
    if not REPORT_NAME.fullmatch(_SAMPLE_NAME):
        raise ValueError(f"{_SAMPLE_NAME} no longer fits REPORT_NAME: update smi/policy.py")
    lines = {
        "nvidia-smi -q -x (scan)": XML_COMMAND,
        "nvidia-smi -L (scan, MIG)": LIST_COMMAND,
        "nvidia-bug-report.sh": bug_report_command(_SAMPLE_NAME, _SAMPLE_SECONDS),
        "checksum of the report": checksum_command(_SAMPLE_NAME),
        "download of the report": download_command(_SAMPLE_NAME),
        "removal of the report": cleanup_command(_SAMPLE_NAME),
    }
    return {what: tuple(_arg(text) for text in argv) for what, argv in lines.items()}


def _refuse(text: str, characters: frozenset[str]) -> str:
    if refused := characters.intersection(text):
        raise ValueError(f"cannot render {sorted(refused)} in {text[:80]!r}: extend smi/policy.py")
    return text


def _arg(text: str) -> Arg:
    seconds = f" {_SAMPLE_SECONDS} "
    if _SAMPLE_NAME not in text and seconds not in text:
        return False, text
    pattern = []
    for i, piece in enumerate(text.split(_SAMPLE_NAME)):
        if i:
            pattern.append(REPORT_NAME.pattern)
        for j, part in enumerate(piece.split(seconds)):
            if j:
                pattern.append(f" {SECONDS} ")
            literal = _refuse(part, _NOT_IN_REGEX)
            pattern.append("".join(f"[{c}]" if c in _SPECIAL else c for c in literal))
    return True, "^" + "".join(pattern) + "$"


def _cel_string(text: str) -> str:
    return "'" + _refuse(text, _NOT_IN_CEL) + "'"


def _cel_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_cel_string(i) for i in items) + "]"


def command_expression(lines: dict[str, tuple[Arg, ...]]) -> str:
    """CEL: ``variables.command`` is one of ``lines``."""
    alternatives = []
    for what, args in lines.items():
        if not any(is_regex for is_regex, _ in args):
            test = f"variables.command == {_cel_list(text for _, text in args)}"
        else:
            checks = [f"size(variables.command) == {len(args)}"]
            for i, (is_regex, text) in enumerate(args):
                op = f".matches({_cel_string(text)})" if is_regex else f" == {_cel_string(text)}"
                checks.append(f"variables.command[{i}]{op}")
            test = "(" + "\n   && ".join(checks) + ")"
        alternatives.append(f"// {what}\n{test}")
    return "\n|| ".join(alternatives)


def _validations(lines: dict[str, tuple[Arg, ...]]) -> list[tuple[str, str]]:
    """(expression, message) in the order the API server reports the first failure."""
    who = f"{POLICY}: gpuid's ServiceAccount may"
    return [
        ("request.subResource == 'exec'", f"{who} not attach to or port-forward into pods"),
        ("request.namespace == variables.namespace", f"{who} exec only in the GPU Operator's namespace"),
        (
            "has(object.container) && object.container in variables.containers",
            f"{who} exec only in the device-plugin and driver containers, named explicitly",
        ),
        (
            "!(has(object.stdin) && object.stdin) && !(has(object.tty) && object.tty)",
            f"{who} not exec with stdin or a TTY",
        ),
        (command_expression(lines), f"{who} run only gpuid's own command lines (gpuid/smi/commands.py)"),
    ]


def _scalar(text: str, indent: str) -> str:
    """A YAML scalar: JSON-quoted when that reads well, else a literal block (no escaping at all)."""
    if '"' not in text and "\n" not in text:
        return json.dumps(text)
    return "|-\n" + "\n".join(indent + line for line in text.split("\n"))


def render_policy(
    *,
    service_accounts: Sequence[str] = SERVICE_ACCOUNTS,
    namespace: str = NAMESPACE,
    containers: Sequence[str] = CONTAINERS,
) -> str:
    """The ValidatingAdmissionPolicy and its binding, as the YAML checked in under deployment/."""
    validations = "".join(
        f"    - expression: {_scalar(expression, ' ' * 8)}\n"
        f"      reason: Forbidden\n"
        f"      message: {json.dumps(message)}\n"
        for expression, message in _validations(command_lines())
    )
    return f"""\
# Generated from gpuid/smi/commands.py by `python -m gpuid.smi.policy`: do not edit.
# tests/smi/test_policy.py fails when this file and the generator disagree.
#
# For requests by gpuid's ServiceAccount only (matchConditions; every other user is
# untouched): exec only gpuid's own command lines, only in the GPU Operator's namespace and
# gpuid's containers, never with stdin or a TTY; never attach or port-forward.
# Kubernetes 1.30+. Knobs and threat model: docs/security.md.
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {POLICY}
  labels:
    app.kubernetes.io/name: gpuid
spec:
  # Fail: an expression that cannot be evaluated denies gpuid's request. An unavailable
  # evaluator can stop gpuid's scans; it can never let a stolen token through.
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CONNECT"]
        resources: ["pods/exec", "pods/attach", "pods/portforward"]
  matchConditions:
    - name: gpuid-service-accounts
      expression: {json.dumps("request.userInfo.username in " + _cel_list(service_accounts))}
  variables:
    # Knobs: NAMESPACE/DRIVER_NAMESPACE and CONTAINER/DRIVER_CONTAINER of gpuid-config.
    - name: namespace
      expression: {json.dumps(_cel_string(namespace))}
    - name: containers
      expression: {json.dumps(_cel_list(containers))}
    # PodExecOptions.command: the argv, a list of strings, never run through a shell by Kubernetes.
    - name: command
      expression: "has(object.command) ? object.command : []"
  validations:
{validations}---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {POLICY}
  labels:
    app.kubernetes.io/name: gpuid
spec:
  policyName: {POLICY}
  validationActions: [Deny]
"""


if __name__ == "__main__":
    sys.stdout.write(render_policy())
