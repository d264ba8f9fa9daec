"""The fast path against the full parser: the same answer on every capture and on fuzzed variants.

``parse_smi_xml(data)`` may take the fast path; ``parse_smi_xml(data, fast=False)``
never does. For any input the two must give equal reports, or refuse it with the
same message; and nothing but ``ParseError`` may escape either.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuid.errors import ParseError
from gpuid.smi.parse import parse_smi_xml
from tests.smi.smidocs import CAPTURES, MIG0, UUID0, UUID1, parse_both, xml
from tests.smi.test_parse import FULL_PARSER, REFUSED

SMALL = [name for name in CAPTURES if len(xml(name)) < 50_000]


@pytest.mark.parametrize("name", sorted(set(CAPTURES) - set(REFUSED)))
def test_every_capture_takes_the_fast_path_and_agrees(name: str) -> None:
    assert parse_both(xml(name)).fast_path == (name not in FULL_PARSER)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<uuid>", b"<!-- x --><uuid>"),  # a comment
        (b"<serial>", b'<serial a="1">'),  # an attribute on a field
        (b"<pci>", b"<pci/><pci>"),  # a self-closing element before the fields
        (b'<gpu id="', b"<gpu  id='"),  # quoting the fast path does not read
        (b"</product_name>", b"</product_name ><?pi x?>"),
        (b"<uuid>", f"<fabric><uuid>{UUID1}</uuid></fabric><uuid>".encode()),  # a nested decoy first
        (b"<mig_devices>", f"<processes/><mig_devices><mig_device><uuid>{MIG0}</uuid></mig_device>".encode()),
        (b"<pci>", b"<x><pci>"),  # an element never closed, before a group
        (b"<nvidia_smi_log>", b"<nvidia_smi_log a='b'>"),
    ],
)
def test_unusual_but_readable_shapes_fall_back_and_agree(old: bytes, new: bytes) -> None:
    data = xml("gpuid-h100-sxm-x8.xml").replace(old, new, 1)
    assert data != xml("gpuid-h100-sxm-x8.xml")
    report = parse_both(data)
    assert not report.fast_path


def test_what_follows_the_fields_does_not_cost_the_fast_path() -> None:
    base = xml("gpuid-h100-sxm-x8.xml")
    for data in (
        base.replace(b"<processes>", f"<processes><uuid>{UUID1}</uuid>".encode(), 1),
        base.replace(b"</gpu>", b"</gpu><gpu><uuid>" + UUID0.encode() + b"</uuid></gpu>", 1),
    ):
        report = parse_both(data)
        assert report.fast_path
        assert UUID1 not in {g.gpu_uuid for g in report.gpus}


def outcome(data: bytes, *, fast: bool) -> object:
    """The report, or the refusal message: what the caller would see."""
    try:
        return parse_smi_xml(data, fast=fast)
    except ParseError as e:
        return f"ParseError: {e}"


TOKENS = [
    b"<",
    b">",
    b"/>",
    b"</",
    b"&",
    b"&amp;",
    b"&x;",
    b"&#0;",
    b"\x00",
    b"\xff",
    b"\r\n",
    b"<!--",
    b"-->",
    b"<![CDATA[",
    b"]]>",
    b"<?x?>",
    b"<gpu>",
    b'<gpu id="00000000:09:00.0">',
    b"</gpu>",
    b"<uuid>",
    b"</uuid>",
    UUID0.encode(),
    MIG0.encode(),
    b"<processes>",
    b"</processes>",
    b"<mig_devices>",
    b"<mig_device>",
    b"</mig_device>",
    b"<pci>",
    b"</pci>",
    b"<platformInfo>",
    b"<serial>",
    b"<a>",
    b"</a>",
    b"[Unknown Error]",
    b"N/A",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A capture with a few edits, mostly at tag boundaries (where readers can disagree)."""
    data = bytearray(xml(draw(st.sampled_from(SMALL))))
    for _ in range(draw(st.integers(1, 4))):
        tags = [i for i in range(len(data)) if data[i] == 0x3C] or [0]
        at = draw(st.sampled_from(tags)) + draw(st.integers(-2, 12))
        at = max(0, min(at, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        else:
            data[at : at + 1] = bytes([draw(st.integers(0, 255))])
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzzed_captures_give_the_same_answer_on_both_paths(data: bytes) -> None:
    assert outcome(data, fast=True) == outcome(data, fast=False)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_a_report_or_a_parse_error(data: bytes) -> None:
    assert outcome(data, fast=True) == outcome(data, fast=False)
