"""gpuid's shipped exec admission policy, evaluated with a real CEL implementation as the API server would.

The policy in ``deployment/components/exec-policy`` is worth only what its CEL
says, so the tests run it: cel-python evaluates the expressions (its
``matches()`` is RE2, as in Kubernetes) with the semantics of a
ValidatingAdmissionPolicy: ``matchConstraints`` and ``matchConditions`` decide
whether it applies at all; then every validation must be true, a false one
denies with its message, and an error denies too (``failurePolicy: Fail``).
``ExecPolicy.admit`` is the admission hook the tests hand to the simulated
API server; ``ExecTally`` checks, test by test, that none of gpuid's own
execs was denied, and counts them for the session's summary.

Interpreting CEL in Python costs milliseconds, and the simulated API server
shares its event loop with the gpuid under test, so a sweep of hundreds of
pods would feel it. A decision is a pure function of what the expressions
read, so it is remembered by exactly that: the ``request`` fields they name
and the whole object (not the pod's name, which no expression reads).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy import celtypes

from gpuid.sim import SERVICE_ACCOUNT, ConnectRecord

MEMO_SIZE = 4096
ROOT = Path(__file__).resolve().parents[2]
POLICY_FILE = ROOT / "deployment" / "components" / "exec-policy" / "policy.yaml"
Doc = dict[str, Any]


def _only(docs: Iterable[Doc], kind: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


class ExecPolicy:
    """A ValidatingAdmissionPolicy and its binding, compiled once, evaluated per request."""

    def __init__(self, docs: Iterable[Doc]) -> None:
        docs = list(docs)
        policy = _only(docs, "ValidatingAdmissionPolicy")
        binding = _only(docs, "ValidatingAdmissionPolicyBinding")
        spec = policy["spec"]
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert spec["failurePolicy"] == "Fail"
        assert "paramKind" not in spec, "this evaluator knows no params"
        self.name, self.binding = policy["metadata"]["name"], binding["metadata"]["name"]
        self.rules = spec["matchConstraints"]["resourceRules"]
        env = celpy.Environment()
        compiled = functools.partial(self._compile, env)
        self.conditions = [(c["name"], compiled(c["expression"])) for c in spec.get("matchConditions", [])]
        self.variables = [(v["name"], compiled(v["expression"])) for v in spec.get("variables", [])]
        self.validations = [(compiled(v["expression"]), v["message"]) for v in spec["validations"]]
        text = "\n".join(
            e["expression"] for e in (*spec.get("matchConditions", []), *spec.get("variables", []))
        ) + "\n".join(v["expression"] for v in spec["validations"])
        # Any use of request other than request.<field> (or of another input) turns the memo off.
        self._reads = sorted(set(re.findall(r"\brequest\.(\w+)", text)))
        self._memo: dict[str, str | None] | None = {}
        if re.search(r"\brequest\b(?!\.\w)|\b(params|namespaceObject|authorizer)\b", text):
            self._memo = None
        self.evaluations = 0  # requests actually evaluated (the others were remembered)

    @staticmethod
    def _compile(env: celpy.Environment, expression: str) -> celpy.Runner:
        return env.program(env.compile(expression))

    @classmethod
    def from_file(cls, path: Path = POLICY_FILE) -> ExecPolicy:
        return cls(d for d in yaml.safe_load_all(path.read_text()) if d)

    def matches(self, request: Mapping[str, Any]) -> bool:
        """``matchConstraints.resourceRules``: operation, group, version and resource/subresource."""
        resource = request["resource"]["resource"]
        if request.get("subResource"):
            resource += "/" + request["subResource"]
        return any(
            request["operation"] in rule["operations"]
            and request["resource"]["group"] in rule["apiGroups"]
            and request["resource"]["version"] in rule["apiVersions"]
            and resource in rule["resources"]
            for rule in self.rules
        )

    def admit(self, request: Mapping[str, Any], obj: Mapping[str, Any]) -> str | None:
        """None when the request is admitted, else the API server's words for the refusal."""
        reason = self.denial(request, obj)
        if reason is None:
            return None
        policy = f"ValidatingAdmissionPolicy '{self.name}' with binding '{self.binding}'"
        return f"{policy} denied request: {reason}"

    def denial(self, request: Mapping[str, Any], obj: Mapping[str, Any]) -> str | None:
        """The message of the first failing validation, or None when the policy admits (or ignores) it."""
        if not self.matches(request):
            return None
        if self._memo is None:
            return self._evaluate(request, obj)
        key = json.dumps([[request.get(f) for f in self._reads], obj], sort_keys=True)
        if key in self._memo:
            return self._memo[key]
        decision = self._evaluate(request, obj)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = decision
        return decision

    def _evaluate(self, request: Mapping[str, Any], obj: Mapping[str, Any]) -> str | None:
        self.evaluations += 1
        activation: dict[str, Any] = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(obj)}
        step = "matchConditions"
        try:
            for _, program in self.conditions:
                if not _boolean(program, activation):
                    return None  # not gpuid's ServiceAccount: the policy does not apply
            variables = celtypes.MapType()
            activation["variables"] = variables
            for name, program in self.variables:
                step = f"variable {name}"
                variables[celtypes.StringType(name)] = _value(program, activation)
            for i, (program, message) in enumerate(self.validations):
                step = f"validation {i}"
                if not _boolean(program, activation):
                    return str(message)
        except celpy.CELEvalError as e:  # failurePolicy: Fail
            return f"{step} resulted in an error: {e}"
        return None


def _value(program: celpy.Runner, activation: dict[str, Any]) -> Any:
    result = program.evaluate(activation)
    if isinstance(result, celpy.CELEvalError):  # an error can also come back as a value
        raise result
    return result


def _boolean(program: celpy.Runner, activation: dict[str, Any]) -> bool:
    result = _value(program, activation)
    if not isinstance(result, celtypes.BoolType):
        raise celpy.CELEvalError(f"expected a bool, got {type(result).__name__}")
    return bool(result)


@functools.cache
def shipped_policy() -> ExecPolicy:
    """The policy as checked in (what `kubectl apply -k` installs), compiled once per session."""
    return ExecPolicy.from_file()


@dataclass
class ExecTally:
    """Every connect request the suite's simulated API servers admitted or denied, checked test by test."""

    admitted: int = 0  # gpuid's execs, all of which the policy allowed
    tests: set[str] = field(default_factory=set)
    denied_on_purpose: int = 0  # requests in tests marked exec_policy_denials
    kinds: dict[str, int] = field(default_factory=dict)  # admitted execs by program

    def check(self, where: str, records: Iterable[ConnectRecord], *, denials_expected: bool = False) -> None:
        """Fail ``where`` if the policy denied gpuid's ServiceAccount anything it did not mean to ask."""
        mine = [r for r in records if r.user == SERVICE_ACCOUNT]
        denied = [r for r in mine if r.denied is not None]
        if denied and not denials_expected:
            shown = "\n".join(
                f"  {r.namespace}/{r.pod} [{r.container}] {list(r.command)}: {r.denied}" for r in denied
            )
            pytest.fail(f"the exec policy denied {len(denied)} of gpuid's requests in {where}:\n{shown}")
        self.denied_on_purpose += len(denied)
        for record in mine:
            if record.denied is None:
                self.admitted += 1
                self.tests.add(where)
                program = record.command[0] if record.command[:2] != ("sh", "-c") else record.command[2]
                key = next((p for p in PROGRAMS if p in program), program)
                self.kinds[key] = self.kinds.get(key, 0) + 1

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items()))
        return (
            f"exec policy ({POLICY_FILE.relative_to(ROOT)}): {self.admitted} execs by gpuid's ServiceAccount "
            f"in {len(self.tests)} tests, all admitted ({kinds}); {self.denied_on_purpose} denied in tests "
            f"that ask for it; {shipped_policy().evaluations} distinct requests evaluated with CEL"
        )


PROGRAMS = ("nvidia-smi -q -x", "nvidia-smi -L", "nvidia-bug-report.sh", "sha256sum", "cat", "rm")
