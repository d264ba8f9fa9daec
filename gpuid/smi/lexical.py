"""Reading identity fields by their position in the bytes: one algorithm, two strictnesses.

The fast path (``strict``) reads a whole report this way and gives up (``Fallback``)
at anything it cannot vouch for; the full parser uses the same reading, lenient,
to salvage a GPU whose markup is broken. Because both run this one algorithm,
whatever the fast path returns is what the full parser would return
(``gpuid.smi.fast`` explains why it also equals an XML parse when the markup is
sound).

The reading: GPUs are ``<gpu ...>`` up to the next ``</gpu>``; in a GPU, fields
are searched before its first ``<processes``/``<accounted_processes``, a GPU-level
field is the first occurrence outside ``<mig_devices>``, a group child the first
occurrence inside its group. Strict mode also records, for every element it used,
the nesting depth the element must have (``checks``) so the caller can verify it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

from gpuid.smi.fields import (
    DAMAGED,
    GPU,
    GPU_GROUPS,
    GPU_LEAVES,
    HEAD,
    MIG_ITEM,
    MIG_LEAVES,
    MIG_LIST,
    STOPS,
    Fields,
    RawGpu,
)

_AFTER_NAME = frozenset(b" \t\r\n/>")
_STRICT_GPU_TAG = re.compile(rb'<gpu(?: id="([^"<>&\s]*)")?>')
_NAMES = {GPU, MIG_LIST, MIG_ITEM, *HEAD, *GPU_LEAVES, *GPU_GROUPS, *STOPS, *MIG_LEAVES}
_NAMES |= {child for children in GPU_GROUPS.values() for child in children}
_OPEN = {name: b"<" + name.encode() for name in _NAMES}
_END = {name: b"</" + name.encode() + b">" for name in _NAMES}
_HEAD = {k: k for k in HEAD}
_GPU_LEAVES = {k: k for k in GPU_LEAVES}
_MIG_LEAVES = {k: k for k in MIG_LEAVES}
_GT, _SLASH = ord(">"), ord("/")


class Fallback(Exception):  # noqa: N818 - a decision, not an error: the full parser takes over
    """The fast path met something it cannot read exactly; the full parser must decide."""


class Element(NamedTuple):
    start: int  # '<' of the start tag
    content: int  # after the start tag
    close: int  # '<' of the end tag (== content for an empty element)
    end: int  # after the end tag


class Reader:
    """Reads fields out of ``text``.

    Lenient mode needs ``snippet`` (an element's bytes to its text) and ``gpu_id`` (a ``<gpu>``
    element's bytes to its ``id`` attribute); either returns None for bytes it cannot parse.
    """

    def __init__(
        self,
        text: bytes,
        strict: bool,
        snippet: Callable[[bytes], str | None] | None = None,
        gpu_id: Callable[[bytes], str | None] | None = None,
    ) -> None:
        self.text, self.strict, self.snippet, self.gpu_id = text, strict, snippet, gpu_id
        self.checks: list[tuple[int, int]] = []  # (position of '<', the depth it must have)

    def find(self, name: str, start: int, end: int) -> int:
        """Position of the first ``<name`` tag in [start, end), or -1."""
        text, needle = self.text, _OPEN[name]
        while (at := text.find(needle, start, end)) >= 0:
            after = at + len(needle)
            if after < len(text) and text[after] in _AFTER_NAME:
                return at
            start = at + 1
        return -1

    def element(self, name: str, at: int, limit: int, depth: int, *, leaf: bool) -> Element:
        """The element whose start tag is at ``at``; strict mode records the depth it must have."""
        text, end_tag = self.text, _END[name]
        if self.strict:
            content = at + len(end_tag) - 1
            if text[content - 1] != _GT:
                raise Fallback
            close = text.find(b"<", content, limit) if leaf else text.find(end_tag, content, limit)
            if close < 0 or not text.startswith(end_tag, close):
                raise Fallback
            if leaf and text.find(b"&", content, close) >= 0:
                raise Fallback
            self.checks.append((at, depth))
            if not leaf:
                self.checks.append((close, depth + 1))
            return Element(at, content, close, close + len(end_tag))
        gt = text.find(b">", at, limit)
        if gt < 0:
            return Element(at, limit, limit, limit)
        if text[gt - 1] == _SLASH:
            return Element(at, gt + 1, gt + 1, gt + 1)
        close = text.find(end_tag, gt + 1, limit)
        if close < 0:
            return Element(at, gt + 1, limit, limit)
        return Element(at, gt + 1, close, close + len(end_tag))

    def value(self, el: Element) -> str:
        if self.strict:
            return self.text[el.content : el.close].decode("utf-8", "replace")
        assert self.snippet is not None
        got = self.snippet(self.text[el.start : el.end])
        return DAMAGED if got is None else got

    def leaves(
        self,
        names: dict[str, str],
        into: Fields,
        start: int,
        end: int,
        *,
        depth: int,
        skip: Element | None = None,
    ) -> int:
        """Read each of ``names`` (element -> field) from [start, end) into ``into``; the last start used."""
        last = -1
        for name, key in names.items():
            at = self._find_outside(name, start, end, skip)
            if at >= 0:
                into[key] = self.value(self.element(name, at, end, depth, leaf=True))
                last = max(last, at)
        return last

    def _find_outside(self, name: str, start: int, end: int, skip: Element | None) -> int:
        at = self.find(name, start, end)
        if skip is not None and skip.start <= at < skip.end:
            at = self.find(name, skip.end, end)
        return at

    def head(self, start: int, end: int) -> Fields:
        head: Fields = {}
        self.leaves(_HEAD, head, start, end, depth=0)
        return head

    def gpu(self, start: int, content: int, end: int) -> RawGpu:
        """Read the GPU whose start tag is at ``start``, content in [content, end).

        Lenient mode searches only before the first stop (``<processes``...). Strict mode
        searches the whole GPU (a field absent before the stop must be absent after it too,
        or an XML parse could see it) and then requires no stop before any element it used.
        """
        gpu = RawGpu()
        gpu.fields["id"] = self._gpu_id(start, content)
        at = self.find(MIG_LIST, content, end)
        migs = self.element(MIG_LIST, at, end, 0, leaf=False) if at >= 0 else None
        stop = end
        if not self.strict:
            stop = min(
                (a for n in STOPS if (a := self._find_outside(n, content, end, migs)) >= 0), default=end
            )
            if migs is not None and migs.start >= stop:
                migs = None
        used = max(
            migs.start if migs else -1,
            self.leaves(_GPU_LEAVES, gpu.fields, content, stop, depth=0, skip=migs),
        )
        for group, children in GPU_GROUPS.items():
            at = self._find_outside(group, content, stop, migs)
            if at >= 0:
                el = self.element(group, at, end, 0, leaf=False)
                self.leaves(children, gpu.fields, el.content, el.close, depth=1)
                used = max(used, at)
        if migs is not None:
            pos = migs.content
            while (at := self.find(MIG_ITEM, pos, migs.close)) >= 0:
                item = self.element(MIG_ITEM, at, migs.close, 1, leaf=False)
                gpu.migs.append({})
                self.leaves(_MIG_LEAVES, gpu.migs[-1], item.content, item.close, depth=2)
                pos = max(item.end, at + 1)
        if self.strict and any(self._find_outside(n, content, used, migs) >= 0 for n in STOPS):
            raise Fallback
        return gpu

    def _gpu_id(self, start: int, content: int) -> str:
        tag = self.text[start:content]
        if self.strict:
            match = _STRICT_GPU_TAG.fullmatch(tag)
            if match is None:
                raise Fallback
            return (match[1] or b"").decode("utf-8", "replace")
        assert self.gpu_id is not None
        got = self.gpu_id(tag if tag.endswith(b"/>") else tag + _END[GPU])
        return DAMAGED if got is None else got


def gpu_blocks(text: bytes, start: int, end: int, strict: bool) -> Iterator[tuple[int, int, int, int]]:
    """Each ``<gpu>`` in [start, end) as (start tag, content, end tag, after the end tag)."""
    reader = Reader(text, strict)
    pos = start
    while (at := reader.find(GPU, pos, end)) >= 0:
        gt = text.find(b">", at, end)
        close = text.find(b"</gpu>", gt, end) if gt >= 0 and text[gt - 1] != ord("/") else -1
        if close < 0 and strict:
            raise Fallback
        if gt < 0:  # a start tag cut off: the rest is this GPU
            yield at, end, end, end
            return
        if text[gt - 1] == ord("/"):  # <gpu/>: an empty GPU
            yield at, gt + 1, gt + 1, gt + 1
            pos = gt + 1
        elif close < 0:  # never closed: the rest is this GPU
            yield at, gt + 1, end, end
            return
        else:
            yield at, gt + 1, close, close + 6
            pos = close + 6
