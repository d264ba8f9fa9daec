"""The identity fast path: the fields gpuid keeps, read with ``bytes.find``, or ``Fallback``.

An 8-GPU reply has ~2,000 elements of which gpuid keeps ~20 per GPU, all in the
first quarter of each ``<gpu>``. Finding those by position costs a fraction of
building any tree (``python -m bench.parse``). It runs after
``gpuid.smi.document`` (span, encoding, DTD refusal and caps are shared) and
returns only what the full parser (``gpuid.smi.xml``) would return:

- if the reply is damaged, the full parser salvages GPUs with the same
  positional reading (``gpuid.smi.lexical``), so the results agree;
- if it is well-formed, a position is an XML path when every ``<`` is a tag,
  which holds when there is no comment, CDATA or processing instruction
  (``Document.plain``) and no self-closing tag before the field: then the depth of a
  position is the count of ``<`` minus twice the count of ``</`` before it. Every
  element used is checked to sit at its path's depth, the text between GPUs to
  be balanced, and a value to hold no markup or reference.

Anything else raises ``Fallback`` and the full parser decides.
"""

from __future__ import annotations

from gpuid.smi.document import Document
from gpuid.smi.fields import MAX_GPUS, ROOT, RawReport
from gpuid.smi.lexical import Fallback, Reader, gpu_blocks

_ROOT_TAG = b"<" + ROOT.encode() + b">"


def read_fast(doc: Document) -> RawReport:
    """The raw report of ``doc`` read by position; ``Fallback`` when that reading is not certain."""
    text = doc.text
    if not doc.plain or not text.startswith(_ROOT_TAG, doc.start):
        raise Fallback
    body = doc.start + len(_ROOT_TAG)
    report = RawReport()
    reader = Reader(text, strict=True)
    after = body
    for start, content, close, end in gpu_blocks(text, body, doc.close, strict=True):
        if len(report.gpus) == MAX_GPUS:
            raise Fallback  # the full parser refuses it, or finds fewer GPUs than it looks
        if not report.gpus:
            report.head = reader.head(body, start)
        reader.checks.append((start, 0))  # what lies before this GPU is balanced
        verify(text, after, reader.checks)
        reader.checks = []
        report.gpus.append(reader.gpu(start, content, close))
        verify(text, content, reader.checks)
        reader.checks = []
        after = end
    if not report.gpus:
        raise Fallback
    verify(text, after, [(doc.close, 0)])
    return report


def verify(text: bytes, base: int, checks: list[tuple[int, int]]) -> None:
    """Each (position, depth) in ``checks`` has that nesting depth counted from ``base``."""
    checks.sort()
    if not checks or text.find(b"/>", base, checks[-1][0]) >= 0:
        raise Fallback
    depth, pos = 0, base
    for at, want in checks:
        depth += text.count(b"<", pos, at) - 2 * text.count(b"</", pos, at)
        if depth != want:
            raise Fallback
        pos = at
