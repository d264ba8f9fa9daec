"""Find the XML document in what nvidia-smi printed, in any encoding, and refuse DTDs.

nvidia-smi prints warnings on stdout around the XML (``WARNING: infoROM is
corrupted at gpu ...``), so the document is the span from its XML declaration
(or first prolog item) through the last ``</nvidia_smi_log>``; text outside it is
returned as warnings, never an error. UTF-16/32 replies (BOM, byte pattern or
declaration) and Latin-1 are transcoded to UTF-8 first, so every later check,
the DTD refusal included, sees the same bytes whatever the encoding.

DTDs are refused by expat itself, not by a byte pattern: the prolog is parsed up
to the root start tag, so a DOCTYPE with an internal subset is seen however it is
spelt and a DOCTYPE inside a comment hides nothing. External DTDs are never
fetched (the plain ``<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">`` is
fine). ``<!ENTITY``/``<!ATTLIST``/``<!ELEMENT``/``<!NOTATION`` are never legitimate
in nvidia-smi output, so they are refused wherever they appear, comments included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.parsers import expat

from gpuid.errors import ParseError
from gpuid.smi.fields import ROOT

# Real 8-GPU replies are 90-360 KB; see gpuid.smi.parse for how the caps were chosen.
MAX_BYTES = 4 * 1024 * 1024
MAX_TAGS = 100_000
WARNING_CHARS = 200

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_DECLARED = re.compile(rb"<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([A-Za-z0-9._-]{1,40})[\"']")
_SAME = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_LATIN1 = frozenset({"iso-8859-1", "iso8859-1", "latin-1", "latin1"})
_ROOT_TAG = re.compile(rb"<" + ROOT.encode() + rb"[\s>/]")
_ROOT_CLOSE = re.compile(rb"</" + ROOT.encode() + rb"\s*>")
_DECLARATION = re.compile(rb"<!(ENTITY|ATTLIST|ELEMENT|NOTATION)")
_PROLOG_ITEMS = (b"<?xml", b"<!DOCTYPE", b"<!--")
_FIRST_TAG = re.compile(rb"<([A-Za-z_][\w.:-]{0,40})")
_PROLOG_TRIES = 16  # beyond that, everything before the root tag is taken as warnings
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Document:
    """The document inside a reply: ``text[start:end]`` is ``<nvidia_smi_log ...>...</nvidia_smi_log>``."""

    text: bytes  # UTF-8
    start: int
    close: int  # where the root end tag begins
    end: int
    warnings: tuple[str, ...]
    plain: bool  # no <! or <? (comment, CDATA, processing instruction) between start and end


class _Found(Exception):  # noqa: N818 - a signal out of an expat handler, not an error
    def __init__(self, name: str, at: int) -> None:
        self.name, self.at = name, at


def extract(data: bytes, *, max_bytes: int = MAX_BYTES) -> Document:
    """Locate and vet the document in ``data``; ``ParseError`` if there is none or it is refused."""
    if len(data) > max_bytes:
        raise ParseError(f"nvidia-smi output is {len(data)} bytes, over the {max_bytes}-byte limit")
    if not data or data.isspace():
        raise ParseError("nvidia-smi printed nothing")
    text = to_utf8(data)
    first = _ROOT_TAG.search(text)
    if first is None:
        raise ParseError(_no_document(text))
    begin, start = _prolog(text, first.start())
    close = _close(text, start)
    end = text.index(b">", close) + 1
    _refuse_declarations(text, start)
    if end - start > MAX_TAGS and text.count(b"<", start, end) > MAX_TAGS:  # fewer bytes: fewer tags
        raise ParseError(f"nvidia-smi XML has more than {MAX_TAGS} tags (refused)")
    plain = text.find(b"!", start, end) < 0 and text.find(b"?", start, end) < 0
    if not plain:
        plain = text.find(b"<!", start, end) < 0 and text.find(b"<?", start, end) < 0
    warnings = tuple(
        f"{where} the XML: {excerpt}"
        for where, excerpt in (
            ("before", _excerpt(text[:begin][:4096])),
            ("after", _excerpt(text[end:][:4096])),
        )
        if excerpt
    )
    return Document(text, start, close, end, warnings, plain)


def to_utf8(data: bytes) -> bytes:
    """``data`` as UTF-8: BOM first, then the XML spec's byte patterns, then the declared encoding."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :] if encoding == "utf-8" else _transcode(data[len(bom) :], encoding)
    head = data[:4]
    if len(head) == 4 and 0 in head:
        if head[0] and not any(head[1:]):
            return _transcode(data, "utf-32-le")
        if not any(head[:3]) and head[3]:
            return _transcode(data, "utf-32-be")
        if head[0] and head[2] and not head[1] and not head[3]:
            return _transcode(data, "utf-16-le")
        if head[1] and head[3] and not head[0] and not head[2]:
            return _transcode(data, "utf-16-be")
    at = data.find(b"<?xml", 0, 64 * 1024)
    declared = _DECLARED.match(data, at) if at >= 0 else None
    name = declared[1].decode().lower() if declared else "utf-8"
    if name in _SAME:
        return data
    if name in _LATIN1:
        return _transcode(data, "latin-1")
    if name.startswith(("utf-16", "utf16", "utf-32", "utf32", "ucs")):
        raise ParseError(f"nvidia-smi XML declares encoding {name!r} but is not encoded so")
    raise ParseError(f"nvidia-smi XML declares unsupported encoding {name!r}")


def _transcode(data: bytes, encoding: str) -> bytes:
    # Undecodable units become U+FFFD, which makes any identity value holding one invalid.
    return data.decode(encoding, "replace").encode("utf-8", "surrogatepass")


def _prolog(text: bytes, root_at: int) -> tuple[int, int]:
    """Where the document begins and where its root element starts, as expat reads the prolog.

    Tries the first prolog item before the root; when expat stops at text that is not markup
    (a warning between the declaration and the root), tries again after it.
    """
    pos = 0
    for _ in range(_PROLOG_TRIES):
        found = [i for item in _PROLOG_ITEMS if (i := text.find(item, pos, root_at)) >= 0]
        begin = min(found) if found else root_at
        root, error_at = _parse_prolog(text, begin)
        if root is not None:
            return begin, root
        if begin == root_at:
            raise ParseError(f"nvidia-smi XML has a malformed <{ROOT}> start tag")
        pos = max(error_at, begin + 1)
    root, _ = _parse_prolog(text, root_at)
    if root is None:
        raise ParseError(f"nvidia-smi XML has a malformed <{ROOT}> start tag")
    return root_at, root


def _parse_prolog(text: bytes, begin: int) -> tuple[int | None, int]:
    parser = expat.ParserCreate("utf-8")  # the text is UTF-8 now, whatever the declaration says

    def doctype(name: str, system_id: str | None, public_id: str | None, internal: int) -> None:
        if internal:
            raise ParseError("nvidia-smi XML has a DOCTYPE internal subset (refused)")

    def declaration(*_: object) -> None:
        raise ParseError("nvidia-smi XML declares entities or attributes in its DTD (refused)")

    def element(name: str, _attributes: object) -> None:
        raise _Found(name, parser.CurrentByteIndex)

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = parser.AttlistDeclHandler = parser.ElementDeclHandler = declaration
    parser.NotationDeclHandler = parser.UnparsedEntityDeclHandler = declaration
    parser.StartElementHandler = element
    step = 4096
    try:
        for at in range(begin, len(text), step):
            parser.Parse(text[at : at + step], False)
    except _Found as found:
        if found.name == ROOT:
            return begin + found.at, 0
        return None, begin + found.at + 1
    except expat.ExpatError:
        return None, begin + max(parser.ErrorByteIndex, 0)
    return None, len(text)


def _close(text: bytes, start: int) -> int:
    at = len(text)
    while (at := text.rfind(b"</" + ROOT.encode(), start, at)) >= 0:
        if _ROOT_CLOSE.match(text, at):
            return at
    raise ParseError(f"nvidia-smi XML is truncated: no </{ROOT}> after <{ROOT}>")


def _refuse_declarations(text: bytes, start: int) -> None:
    if text.find(b"!", start) >= 0:
        found = _DECLARATION.search(text)
        if text.find(b"<!DOCTYPE", start) >= 0:
            raise ParseError("nvidia-smi XML has a DOCTYPE inside the document (refused)")
    else:
        found = _DECLARATION.search(text, 0, start)
    if found:
        raise ParseError(f"nvidia-smi output holds an <!{found[1].decode()} declaration (refused)")


def _no_document(text: bytes) -> str:
    head = text.lstrip(b" \t\r\n")
    if head.startswith(b"<"):
        tag = _FIRST_TAG.search(head, 0, 4096)
        name = tag[1].decode("ascii", "replace") if tag else "?"
        return f"nvidia-smi output has no <{ROOT}> element (found <{name}>)"
    line = _excerpt(head[:4096].partition(b"\n")[0])[:80]
    return f"nvidia-smi output is not XML: {line!r}"


def _excerpt(raw: bytes) -> str:
    """Printable one-line text of at most WARNING_CHARS characters."""
    text = _CONTROL.sub(b" ", raw).decode("utf-8", "replace")
    return " ".join(text.split())[:WARNING_CHARS]
