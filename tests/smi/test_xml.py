"""gpuid.smi.xml: the full parser's text repair, its expat collector and its per-GPU salvage.

(Whole replies, real and damaged, are in test_parse.py and test_damage.py.)
"""

from __future__ import annotations

import pytest

from gpuid.smi.fields import DAMAGED, RawGpu
from gpuid.smi.xml import collect, sanitize, snippet_text
from tests.smi.smidocs import UUID0, parse_both

BODY = (
    "<nvidia_smi_log><driver_version>570.86.15</driver_version>"
    '<gpu id="00000000:04:00.0"><product_name>A &amp; B&#33;</product_name>'
    f"<uuid>{UUID0}</uuid><serial>\r\n  1652923034028\r\n</serial></gpu></nvidia_smi_log>"
)


def test_references_and_line_ends_come_out_as_expat_reports_them() -> None:
    report = parse_both(BODY.encode())
    assert not report.fast_path  # a value with a reference: only the full parser reads it
    (gpu,) = report.gpus
    assert (gpu.product_name, gpu.gpu_uuid, gpu.gpu_serial) == ("A & B!", UUID0, "1652923034028")


def test_a_value_with_markup_inside_is_all_its_text() -> None:
    gpu = parse_both(BODY.replace("A &amp; B&#33;", "A <b>bold</b> <![CDATA[<x>]]>").encode()).gpus[0]
    assert gpu.product_name == "A bold <x>"


@pytest.mark.parametrize(
    ("damaged", "repaired"),
    [
        (b"<a>\xff\xfeok</a>", "<a>\ufffd\ufffdok</a>"),
        (b"<a>x\x00\x01\x1fy\tz\r\n</a>", "<a>x\x7f\x7f\x7fy\tz\r\n</a>"),
        (
            b"<a>&amp;&lt;&gt;&quot;&apos;&#65;&#x42; & &nbsp; &x</a>",
            "<a>&amp;&lt;&gt;&quot;&apos;&#65;&#x42; \x7f \x7fnbsp; \x7fx</a>",
        ),
        (b"<a>2 ]]> 3</a>", "<a>2 ]]&gt; 3</a>"),
        ("<a>\ufffe\uffff</a>".encode(), "<a>\ufffd\ufffd</a>"),
        (b"<a><![CDATA[x]]></a>", "<a><![CDATA[x]]></a>"),
    ],
)
def test_sanitize_makes_text_damage_harmless_and_leaves_markup(damaged: bytes, repaired: str) -> None:
    assert sanitize(damaged) == repaired.encode()
    assert snippet_text(sanitize(damaged)) is not None  # expat reads the result


def test_stray_markup_and_forbidden_references_are_left_to_expat() -> None:
    assert sanitize(b"<a>&#0;&#xD800; 1 < 2</a>") == b"<a>&#0;&#xD800; 1 < 2</a>"
    assert snippet_text(b"<a>&#0;</a>") is None  # so the part holding one is read by position


def test_snippet_text_is_none_for_broken_markup() -> None:
    assert snippet_text(b"<uuid>a<b</uuid>") is None
    assert snippet_text(b"<uuid>a<b>c</b>d</uuid>") == "acd"
    assert snippet_text(b"<uuid/>") == ""


def test_the_collector_keeps_only_identity_fields_at_their_paths() -> None:
    span = (
        f"<nvidia_smi_log><timestamp>t</timestamp><driver_version>1</driver_version>"
        f"<gpu id='x'><uuid>{UUID0}</uuid><processes><uuid>no</uuid></processes><serial>no</serial></gpu>"
        "<driver_version>2</driver_version></nvidia_smi_log>"
    ).encode()
    report = collect(span)
    assert report.head == {"driver_version": "1"}
    assert report.gpus == [RawGpu({"id": "x", "uuid": UUID0})]


def test_a_gpu_that_cannot_be_parsed_is_read_by_position() -> None:
    span = (
        f"<nvidia_smi_log><gpu><uuid>{UUID0}</uuid><serial>1&2</serial><junk></gpu>"
        f"<gpu><uuid>{UUID0}</uuid></gpu></nvidia_smi_log>"
    ).encode()
    report = parse_both(span)
    assert [g.gpu_serial for g in report.gpus] == [None, None]
    assert [(n.gpu_index, n.field, n.reason) for n in report.nulled] == [(0, "gpu_serial", "invalid")]
    assert DAMAGED == "\ufffd"
