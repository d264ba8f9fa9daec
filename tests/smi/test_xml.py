"""gpuid.smixml: the byte-level guards and the collector pause around the ElementTree parse.

(The parser's behaviour on real captures and hostile input is in test_smi.py.)
"""

from __future__ import annotations

import gc

import pytest

from gpuid.errors import ParseError
from gpuid.smi.parse import parse_smi_xml

BODY = (
    "<nvidia_smi_log><driver_version>570.86.15</driver_version>"
    '<gpu id="00000000:04:00.0"><product_name>A &amp; B&#33;</product_name>'
    "<uuid>GPU-1</uuid><serial>\r\n  1652923034028\r\n</serial></gpu></nvidia_smi_log>"
)


def test_references_and_line_ends_come_out_as_expat_reports_them() -> None:
    (gpu,) = parse_smi_xml(BODY.encode()).gpus
    assert (gpu.product_name, gpu.gpu_uuid, gpu.gpu_serial) == ("A & B!", "GPU-1", "1652923034028")


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">',
        "<!DOCTYPE nvidia_smi_log SYSTEM 'dir[1]/nvsmi.dtd'>",  # a bracket inside quotes is no subset
        '<!DOCTYPE nvidia_smi_log PUBLIC "-//NVIDIA//x" "nvsmi.dtd"\n>',
    ],
)
def test_external_doctypes_are_accepted(doctype: str) -> None:
    assert parse_smi_xml(f'<?xml version="1.0" ?>\n{doctype}\n{BODY}'.encode()).gpus[0].gpu_uuid == "GPU-1"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('<!DOCTYPE nvidia_smi_log SYSTEM "x.dtd" [ ]>' + BODY, "internal subset"),
        ("<!DOCTYPE nvidia_smi_log SYSTEM " + "x" * 5000 + ">" + BODY, "internal subset"),
        ("<!-- <!ENTITY x 'y'> -->" + BODY, "entity"),  # refused even in a comment: never legitimate
    ],
)
def test_dtd_tricks_are_refused_before_parsing(doc: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_smi_xml(doc.encode())


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_only_during_the_parse(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        parse_smi_xml(BODY.encode())
        assert gc.isenabled() is enabled
        with pytest.raises(ParseError):
            parse_smi_xml(b"<nvidia_smi_log><gpu>")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
