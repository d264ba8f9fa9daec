"""What a list answer must look like to be used, checked without trusting the JSON's shape.

The API server (or a proxy in front of it) is a peer, not a promise: a list
whose ``items`` is not a list or that lacks ``metadata.resourceVersion`` cannot
be watched from, and an object without ``metadata.uid`` cannot be tracked.
These checks are pure; the informer decides what a problem costs (a list is
asked for again, an object is skipped) and logs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


class MalformedError(ValueError):
    """A list answer gpuid cannot use; ``problem`` names what is wrong with it."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass
class Page:
    """One page of a list: its snapshot's resourceVersion, the next page's token, the usable items."""

    rv: str
    token: str
    items: list[tuple[str, Obj]] = field(default_factory=list)  # (uid, object)
    skipped: int = 0  # items without a uid


def uid_of(obj: object) -> str | None:
    """``metadata.uid`` when ``obj`` is an object that has one."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    uid = meta.get("uid") if isinstance(meta, dict) else None
    return uid if isinstance(uid, str) and uid else None


def decode_page(payload: object) -> Page:
    """The page in a decoded list answer; ``MalformedError`` when it cannot be used."""
    payload = payload if isinstance(payload, dict) else {}
    meta, items = payload.get("metadata"), payload.get("items")
    meta = meta if isinstance(meta, dict) else {}
    rv, token = meta.get("resourceVersion"), meta.get("continue") or ""
    if not isinstance(items, list | None):
        raise MalformedError("list items are not a list")
    if not isinstance(rv, str) or not rv:
        raise MalformedError("list without metadata.resourceVersion")
    if not isinstance(token, str):
        raise MalformedError("list continue token is not a string")
    page = Page(rv, token)
    for obj in items or ():
        uid = uid_of(obj)
        if uid is None:
            page.skipped += 1
        else:
            page.items.append((uid, obj))
    return page
