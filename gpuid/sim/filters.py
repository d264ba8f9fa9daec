"""Label and field selectors, parsed the way the Kubernetes API server does.

gpuid finds its pods by ``labelSelector`` and pins per-node lookups with
``fieldSelector=spec.nodeName=…``; a sim that ignored selectors would let a
wrong selector pass the tests. The same :class:`ObjectFilter` decides list
results and, for watches, whether an object entered or left the result set.
Invalid selectors raise :class:`SelectorError`, which the server turns into
a 400 ``BadRequest`` Status like the real one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Field selectors each resource supports (the real server rejects the rest).
SUPPORTED_FIELDS: dict[str, frozenset[str]] = {
    "pods": frozenset(
        {"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase", "spec.restartPolicy"}
    ),
    "nodes": frozenset({"metadata.name", "spec.unschedulable"}),
    "events": frozenset(
        {"metadata.name", "metadata.namespace", "reason", "type", "reportingController"}
        | {f"regarding.{f}" for f in ("kind", "name", "namespace", "uid", "apiVersion", "resourceVersion")}
    ),
}

_KEY = r"[A-Za-z0-9](?:[A-Za-z0-9_./-]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?)?"
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")
_EQUALITY = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(\s*([^()]*?)\s*\)$")
_FIELD = re.compile(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$")


class SelectorError(ValueError):
    """A selector the real API server would reject with 400 BadRequest."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """One term of a selector: ``key op values`` (op: ``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!``)."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, found: str | None) -> bool:
        if self.op == "exists":
            return found is not None
        if self.op == "!":
            return found is None
        if self.op in ("=", "in"):
            return found is not None and found in self.values
        return found is None or found not in self.values  # "!=" and "notin"


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` parentheses."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(selector[start:i].strip())
            start = i + 1
    terms.append(selector[start:].strip())
    return [t for t in terms if t]


def parse_label_selector(selector: str) -> tuple[Requirement, ...]:
    requirements = []
    for term in _split_terms(selector):
        if m := _EQUALITY.match(term):
            op = "!=" if m.group(2) == "!=" else "="
            requirements.append(Requirement(m.group(1), op, frozenset({m.group(3)})))
        elif m := _SET.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append(Requirement(m.group(1), m.group(2), values))
        elif m := _EXISTS.match(term):
            requirements.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return tuple(requirements)


def parse_field_selector(selector: str, resource: str) -> tuple[Requirement, ...]:
    supported = SUPPORTED_FIELDS.get(resource, frozenset({"metadata.name", "metadata.namespace"}))
    requirements = []
    for term in _split_terms(selector):
        m = _FIELD.match(term)
        if not m:
            raise SelectorError(f"invalid selector: {term!r}; can't understand {term!r}")
        if m.group(1) not in supported:
            raise SelectorError(f'field label not supported: "{m.group(1)}"')
        op = "!=" if m.group(2) == "!=" else "="
        requirements.append(Requirement(m.group(1), op, frozenset({m.group(3)})))
    return tuple(requirements)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string a field selector compares against (absent fields compare as ``""``)."""
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


@dataclass(frozen=True, slots=True)
class ObjectFilter:
    """Namespace + label selector + field selector, all ANDed."""

    namespace: str | None = None
    labels: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()
    key: str = ""  # canonical text of the selection, so watchers with equal selectors share work

    @classmethod
    def parse(
        cls, resource: str, namespace: str | None, label_selector: str, field_selector: str
    ) -> ObjectFilter:
        return cls(
            namespace=namespace,
            labels=parse_label_selector(label_selector),
            fields=parse_field_selector(field_selector, resource),
            key=f"{resource}\0{namespace or ''}\0{label_selector}\0{field_selector}",
        )

    def equality(self, path: str) -> str | None:
        """The value ``path`` must equal, when the field selector pins it (lets lists use an index)."""
        for req in self.fields:
            if req.key == path and req.op == "=":
                return next(iter(req.values))
        return None

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels: Mapping[str, str] = meta.get("labels") or {}
        if not all(req.matches(labels.get(req.key)) for req in self.labels):
            return False
        return all(req.matches(field_value(obj, req.key)) for req in self.fields)
