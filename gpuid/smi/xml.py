"""The full parser: expat reads the identity fields; damage costs a value or a GPU, never the node.

It is the reference the fast path is checked against, and the reader of every
reply the fast path declines. In order:

1. Text damage that makes expat stop (invalid UTF-8, control characters, a raw
   ``&`` or an unknown entity, ``]]>``) is made harmless (``sanitize``) in a way
   that makes an identity value holding it invalid; elsewhere it costs nothing.
2. expat parses the document, calling back only for the start and end of elements
   (and for text only inside the fields kept): no tree is built, so memory stays at
   the size of the values kept, and the document is fed in 64 KiB pieces. Reading
   rules: ``gpuid.smi.fields``.
3. If the markup itself is broken, each ``<gpu>`` is parsed on its own, and one
   that still fails is read by position (``gpuid.smi.lexical``, as the fast path
   reads), each field parsed on its own: broken markup in what gpuid does not read
   costs nothing, in a field it costs that field.

No DTD reaches this module: ``gpuid.smi.document`` refused it.
"""

from __future__ import annotations

from xml.parsers import expat

from gpuid.smi.document import Document
from gpuid.smi.fields import (
    GPU,
    GPU_GROUPS,
    GPU_LEAVES,
    HEAD,
    MAX_GPUS,
    MIG_ITEM,
    MIG_LEAVES,
    MIG_LIST,
    ROOT,
    STOPS,
    Fields,
    RawGpu,
    RawReport,
    too_many_gpus,
)
from gpuid.smi.lexical import Reader, gpu_blocks

MARK = "\ufffd".encode()
_CONTROLS_TO_DEL = bytes.maketrans(bytes([*range(9), 11, 12, *range(14, 32)]), b"\x7f" * 29)
_REFERENCES = (b"amp;", b"lt;", b"gt;", b"quot;", b"apos;", b"#")
_OPEN, _CLOSE = f"<{ROOT}>".encode(), f"</{ROOT}>".encode()


def read_full(doc: Document) -> RawReport:
    span = sanitize(doc.text[doc.start : doc.end])
    try:
        return collect(span)
    except expat.ExpatError:
        return _read_damaged(span)


def sanitize(span: bytes) -> bytes:
    """``span`` with the text damage that stops expat made harmless (markup left alone).

    Control characters and any '&' that starts no reference become DEL, which XML allows
    and an identity value may not hold (so such a value is nulled as invalid);
    undecodable bytes and U+FFFE/U+FFFF become U+FFFD. Only whole-buffer byte operations:
    a reply full of damage costs time in proportion to its size, not to its damage.
    A stray '<' or a reference to a forbidden character is left to expat: the GPU holding
    it is then read by position.
    """
    if not span.isascii():
        try:
            span.decode("utf-8")
        except UnicodeDecodeError:
            span = span.decode("utf-8", "replace").encode("utf-8")
        span = span.replace(b"\xef\xbf\xbe", MARK).replace(b"\xef\xbf\xbf", MARK)
    span = span.translate(_CONTROLS_TO_DEL)  # NUL is free from here on: it marks kept references
    if b"&" in span:
        for reference in _REFERENCES:
            span = span.replace(b"&" + reference, b"\0" + reference)
        span = span.replace(b"&", b"\x7f").replace(b"\0", b"&")
    if b"]]>" in span and b"<![CDATA[" not in span:
        span = span.replace(b"]]>", b"]]&gt;")
    return span


def snippet_text(snippet: bytes) -> str | None:
    """All the text inside one element's bytes, or None if expat cannot parse them."""
    parts: list[str] = []
    parser = expat.ParserCreate("utf-8")
    parser.buffer_text = True
    parser.CharacterDataHandler = parts.append
    try:
        parser.Parse(snippet, True)
    except expat.ExpatError:
        return None
    return "".join(parts)


def gpu_id(element: bytes) -> str | None:
    """The ``id`` attribute of a ``<gpu>`` element's bytes, or None if expat cannot parse them."""
    found: list[str] = []
    parser = expat.ParserCreate("utf-8")
    parser.StartElementHandler = lambda _name, attributes: found.append(attributes.get("id", ""))
    try:
        parser.Parse(element, True)
    except expat.ExpatError:
        return None
    return found[0]


def _read_damaged(span: bytes) -> RawReport:
    body = span.find(b">") + 1
    close = span.rfind(b"</")
    report = RawReport()
    reader = Reader(span, strict=False, snippet=snippet_text, gpu_id=gpu_id)
    for start, content, end_tag, end in gpu_blocks(span, body, close, strict=False):
        if len(report.gpus) == MAX_GPUS:
            raise too_many_gpus()
        if not report.gpus:
            report.head = _head(span, reader, body, start)
        try:
            report.gpus.extend(collect(_OPEN + span[start:end] + _CLOSE).gpus[:1])
        except expat.ExpatError:
            report.gpus.append(reader.gpu(start, content, end_tag))
    if not report.gpus:
        report.head = _head(span, reader, body, close)
    return report


def _head(span: bytes, reader: Reader, start: int, end: int) -> Fields:
    try:
        return collect(_OPEN + span[start:end] + _CLOSE).head
    except expat.ExpatError:
        return reader.head(start, end)


def collect(span: bytes) -> RawReport:
    """Parse ``span`` (a whole ``<nvidia_smi_log>`` element) with expat; ``ExpatError`` if malformed."""
    return _Collector().run(span)


class _Collector:
    """expat callbacks that keep the fields of ``gpuid.smi.fields`` and nothing else."""

    def __init__(self) -> None:
        self.report = RawReport()
        self.depth = 0
        self.gpu: RawGpu | None = None
        self.stopped = False
        self.seen: set[str] = set()  # groups and MIG list already read in this GPU
        self.group: dict[str, str] | None = None
        self.in_migs = False
        self.mig: Fields | None = None
        self.target: Fields | None = None  # where the captured text goes, under self.key
        self.key = ""
        self.capture_depth = 0
        self.parts: list[str] = []

    def run(self, span: bytes) -> RawReport:
        self.parser = parser = expat.ParserCreate("utf-8")
        parser.buffer_text = True
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        step = 64 * 1024  # fed in pieces: a thread running this gives the GIL back between them
        for at in range(0, len(span), step):
            parser.Parse(span[at : at + step], False)
        parser.Parse(b"", True)
        return self.report

    def start(self, name: str, attributes: dict[str, str]) -> None:
        self.depth = depth = self.depth + 1
        if self.target is not None:
            return
        gpu = self.gpu
        if depth == 2:
            if name == GPU:
                if len(self.report.gpus) == MAX_GPUS:
                    raise too_many_gpus()
                self.gpu = RawGpu({"id": attributes.get("id", "")})
                self.report.gpus.append(self.gpu)
                self.stopped, self.seen = False, set()
            elif name in HEAD and not self.report.gpus and name not in self.report.head:
                self._capture(self.report.head, name)
        elif gpu is None or self.stopped:
            return
        elif depth == 3:
            if name in STOPS:
                self.stopped = True
            elif name in GPU_LEAVES and name not in gpu.fields:
                self._capture(gpu.fields, name)
            elif (name in GPU_GROUPS or name == MIG_LIST) and name not in self.seen:
                self.seen.add(name)
                self.group = GPU_GROUPS.get(name)
                self.in_migs = name == MIG_LIST
        elif depth == 4 and self.group is not None:
            key = self.group.get(name)
            if key is not None and key not in gpu.fields:
                self._capture(gpu.fields, key)
        elif depth == 4 and self.in_migs and name == MIG_ITEM:
            self.mig = {}
            gpu.migs.append(self.mig)
        elif depth == 5 and self.mig is not None and name in MIG_LEAVES and name not in self.mig:
            self._capture(self.mig, name)

    def end(self, _name: str) -> None:
        depth = self.depth
        self.depth -= 1
        if self.target is not None and depth == self.capture_depth:
            self.target[self.key] = "".join(self.parts)
            self.target = None
            self.parser.CharacterDataHandler = None
        if depth == 2:
            self.gpu = None
        elif depth == 3:
            self.group, self.in_migs = None, False
        elif depth == 4:
            self.mig = None

    def _capture(self, target: Fields, key: str) -> None:
        self.target, self.key, self.capture_depth, self.parts = target, key, self.depth, []
        self.parser.CharacterDataHandler = self.parts.append
