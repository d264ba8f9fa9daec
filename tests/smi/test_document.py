"""gpuid.smi.document: text around the XML, encodings, DTD refusal and the caps.

Inputs are generated from the real 8 x H100 capture; each accepted one must give
exactly its records, each refused one exactly its message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuid.errors import ParseError
from gpuid.smi.document import MAX_BYTES, MAX_TAGS, WARNING_CHARS
from gpuid.smi.parse import parse_smi_xml
from tests.smi.smidocs import H100, UUID0, one_gpu, parse_both, xml

BASE = xml(H100)
RECORDS = parse_both(BASE).gpus
DECLARATION = b'<?xml version="1.0" ?>'
ONE_GPU = f"<nvidia_smi_log><gpu><uuid>{UUID0}</uuid></gpu></nvidia_smi_log>".encode()
INFOROM = b"WARNING: infoROM is corrupted at gpu 0000:01:00.0\n"


@pytest.mark.parametrize(
    ("data", "warnings"),
    [
        (INFOROM + BASE, ("before the XML: WARNING: infoROM is corrupted at gpu 0000:01:00.0",)),
        (BASE + b"\n\n", ()),
        (b"\n" + BASE, ()),
        (b"\r\n \r\n" + BASE.replace(b"\n", b"\r\n") + b"\r\n", ()),
        (BASE + b"WARNING: done\n", ("after the XML: WARNING: done",)),
        (
            INFOROM * 2 + BASE + b"\x00\x1b[1mmore\n\nlines\xff\n",
            (
                "before the XML: WARNING: infoROM is corrupted at gpu 0000:01:00.0 WARNING: infoROM is "
                "corrupted at gpu 0000:01:00.0",
                "after the XML: [1mmore lines\ufffd",
            ),
        ),
        (
            BASE.replace(DECLARATION, DECLARATION + b"\nWARNING: between\n"),
            ('before the XML: <?xml version="1.0" ?> WARNING: between',),
        ),
    ],
)
def test_text_around_the_document_is_a_warning(data: bytes, warnings: tuple[str, ...]) -> None:
    report = parse_both(data)
    assert report.gpus == RECORDS
    assert report.warnings == warnings


def test_warnings_are_cut_to_200_characters() -> None:
    report = parse_both(b"W" * 100_000 + b"\n" + BASE + b"V" * 100_000)
    assert report.warnings == (
        "before the XML: " + "W" * WARNING_CHARS,
        "after the XML: " + "V" * WARNING_CHARS,
    )


def declared(encoding: str) -> bytes:
    return BASE.replace(DECLARATION, f'<?xml version="1.0" encoding="{encoding}"?>'.encode())


@pytest.mark.parametrize(
    ("encoding", "declaration"),
    [
        ("utf-16", None),  # BOM, no declaration of it
        ("utf-16-le", "UTF-16"),
        ("utf-16-be", "UTF-16"),
        ("utf-16-le", None),  # neither: the byte pattern tells
        ("utf-32", None),
        ("utf-32-le", "UTF-32"),
        ("utf-32-be", None),
        ("utf-8-sig", "UTF-8"),
    ],
)
def test_utf16_and_utf32_replies_give_the_same_records(encoding: str, declaration: str | None) -> None:
    text = (declared(declaration) if declaration else BASE).decode()
    report = parse_both(text.encode(encoding))
    assert report.gpus == RECORDS
    assert report.fast_path


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
def test_entities_are_refused_in_any_encoding(encoding: str) -> None:
    subset = f'<!DOCTYPE nvidia_smi_log [<!ENTITY uuid "{UUID0}">]>'
    text = f'<?xml version="1.0" encoding="{encoding.upper()[:6]}"?>{subset}'
    text += "<nvidia_smi_log><gpu><uuid>&uuid;</uuid></gpu></nvidia_smi_log>"
    with pytest.raises(ParseError, match=r"^nvidia-smi XML has a DOCTYPE internal subset \(refused\)$"):
        parse_smi_xml(text.encode(encoding))


def test_latin1_is_transcoded() -> None:
    data = declared("ISO-8859-1").replace(b"NVIDIA H100 80GB HBM3", b"NVIDIA \xc9dition", 1)
    assert parse_both(data).gpus[0].product_name == "NVIDIA Édition"


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE nvidia_smi_log [\n<!ENTITY lol "lol">\n'
    + b"".join(
        b'<!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>\n<nvidia_smi_log><gpu><uuid>&lol9;</uuid></gpu></nvidia_smi_log>"
)
SUBSET = "nvidia-smi XML has a DOCTYPE internal subset (refused)"
REFUSED = {
    "billion laughs": (BILLION_LAUGHS, SUBSET),
    "external entity": (
        b'<!DOCTYPE nvidia_smi_log [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<nvidia_smi_log><gpu><uuid>&x;</uuid></gpu></nvidia_smi_log>",
        SUBSET,
    ),
    "parameter entity": (
        b'<!DOCTYPE nvidia_smi_log [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><nvidia_smi_log/>',
        SUBSET,
    ),
    "empty internal subset": (b"<!DOCTYPE x [ ]>" + ONE_GPU, SUBSET),
    "attlist defaults": (
        b'<!DOCTYPE nvidia_smi_log [<!ATTLIST gpu id CDATA "0000:66:00.0">]>' + ONE_GPU,
        SUBSET,
    ),
    "decoy doctype in a comment, then a real one": (
        DECLARATION + b'<!-- <!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd"> -->'
        b'<!DOCTYPE nvidia_smi_log [<!ATTLIST gpu id CDATA "evil">]>' + ONE_GPU,
        SUBSET,
    ),
    "entity declared in a comment": (
        b"<!-- <!ENTITY x 'y'> -->" + ONE_GPU,
        "nvidia-smi output holds an <!ENTITY declaration (refused)",
    ),
    "attlist after the document": (
        ONE_GPU + b"<!ATTLIST gpu id CDATA 'x'>",
        "nvidia-smi output holds an <!ATTLIST declaration (refused)",
    ),
    "doctype inside the document": (
        ONE_GPU.replace(b"<gpu>", b'<!DOCTYPE x [<!ENTITY y "z">]><gpu>'),
        "nvidia-smi XML has a DOCTYPE inside the document (refused)",
    ),
    "declared utf-16 but is not": (
        declared("UTF-16"),
        "nvidia-smi XML declares encoding 'utf-16' but is not encoded so",
    ),
    "unknown encoding": (declared("EBCDIC-US"), "nvidia-smi XML declares unsupported encoding 'ebcdic-us'"),
    "truncated": (
        BASE[: len(BASE) // 2],
        "nvidia-smi XML is truncated: no </nvidia_smi_log> after <nvidia_smi_log>",
    ),
    "empty": (b"", "nvidia-smi printed nothing"),
    "whitespace": (b" \n\t\n", "nvidia-smi printed nothing"),
    "shell error": (
        b"sh: 1: nvidia-smi: not found\n",
        "nvidia-smi output is not XML: 'sh: 1: nvidia-smi: not found'",
    ),
    "garbage after long blank": (
        b" \r\n" * 100 + b"Failed to initialize NVML: Driver/library version mismatch\r\n",
        "nvidia-smi output is not XML: 'Failed to initialize NVML: Driver/library version mismatch'",
    ),
    "long garbage": (b"x" * 100_000, "nvidia-smi output is not XML: '" + "x" * 80 + "'"),
    "html": (
        b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
        "nvidia-smi output has no <nvidia_smi_log> element (found <html>)",
    ),
    "wrong root": (
        ONE_GPU.replace(b"nvidia_smi_log", b"nvidia_smi"),
        "nvidia-smi output has no <nvidia_smi_log> element (found <nvidia_smi>)",
    ),
    "no gpu": (
        b"<nvidia_smi_log><attached_gpus>8</attached_gpus></nvidia_smi_log>",
        "nvidia-smi XML lists no <gpu> elements",
    ),
    "gpu without uuid": (
        one_gpu("<serial>1652923034028</serial>"),
        "nvidia-smi XML has no GPU with a usable UUID: GPU 0 (PCI 00000000:01:00.0): uuid_missing",
    ),
    "undeclared entity behind an external DTD": (
        b'<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">'
        b"<nvidia_smi_log><gpu><uuid>GPU-&x;</uuid></gpu></nvidia_smi_log>",
        "nvidia-smi XML has no GPU with a usable UUID: GPU 0 (PCI ?): uuid_invalid",
    ),
    "too many GPUs": (
        b"<nvidia_smi_log>" + f"<gpu><uuid>{UUID0}</uuid></gpu>".encode() * 65 + b"</nvidia_smi_log>",
        "nvidia-smi XML lists more than 64 GPUs (refused)",
    ),
    "over the byte cap": (
        b" " * MAX_BYTES + b"x",
        f"nvidia-smi output is {MAX_BYTES + 1} bytes, over the {MAX_BYTES}-byte limit",
    ),
    "tiny-element flood": (
        BASE.replace(b"<processes>", b"<processes>" + b"<a/>" * MAX_TAGS, 1),
        f"nvidia-smi XML has more than {MAX_TAGS} tags (refused)",
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_refused_replies_say_exactly_why(name: str) -> None:
    data, message = REFUSED[name]
    with pytest.raises(ParseError) as caught:
        parse_smi_xml(data)
    assert str(caught.value) == message
    with pytest.raises(ParseError) as full:
        parse_smi_xml(data, fast=False)
    assert str(full.value) == message


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">',
        "<!DOCTYPE nvidia_smi_log SYSTEM 'dir[1]/nvsmi.dtd'>",  # a bracket inside quotes is no subset
        '<!DOCTYPE nvidia_smi_log PUBLIC "-//NVIDIA//x" "nvsmi.dtd"\n>',
        '<!-- <!DOCTYPE nvidia_smi_log [ ]> --><!DOCTYPE nvidia_smi_log SYSTEM "x.dtd">',
    ],
)
def test_external_doctypes_are_accepted(doctype: str) -> None:
    data = BASE.replace(b'<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">', doctype.encode())
    assert parse_both(data).gpus == RECORDS


def test_external_dtds_and_entities_are_never_loaded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER\n")
    dtd = tmp_path / "evil.dtd"
    dtd.write_text(f'<!ENTITY leak SYSTEM "{secret.as_uri()}"><!ATTLIST gpu id CDATA "from-dtd">')
    data = f'<!DOCTYPE nvidia_smi_log SYSTEM "{dtd.as_uri()}">'.encode() + ONE_GPU.replace(
        b"<gpu>", b"<gpu><product_name>&leak;</product_name>"
    )
    report = parse_both(data)
    assert report.gpus[0].product_name is None  # an unknown entity: damage, never expanded
    assert report.gpus[0].pci_bus_id is None  # no default attribute from the DTD either
    assert "TOP-SECRET" not in repr(report)


def test_a_flood_at_the_tag_cap_is_read() -> None:
    in_document = BASE.count(b"<", BASE.index(b"<nvidia_smi_log"))
    flood = BASE.replace(b"<processes>", b"<processes>" + b"<a/>" * (MAX_TAGS - in_document), 1)
    assert flood.count(b"<", flood.index(b"<nvidia_smi_log")) == MAX_TAGS
    assert parse_both(flood).gpus == RECORDS


def test_64_gpus_are_read() -> None:
    data = b"<nvidia_smi_log>" + f"<gpu><uuid>{UUID0}</uuid></gpu>".encode() * 64 + b"</nvidia_smi_log>"
    assert len(parse_both(data).gpus) == 64


def test_deep_nesting_is_read() -> None:
    depth = (MAX_TAGS - BASE.count(b"<")) // 2
    deep = BASE.replace(b"<processes>", b"<processes>" + b"<a>" * depth + b"</a>" * depth, 1)
    assert parse_both(deep).gpus == RECORDS
    broken = BASE.replace(b"<processes>", b"<processes>" + b"<a>" * depth, 1)
    assert parse_both(broken).gpus == RECORDS


def test_megabyte_text_nodes_are_read_and_capped() -> None:
    big = b"x" * (1024 * 1024)
    data = BASE.replace(b"<processes>", b"<processes><process_name>" + big + b"</process_name>", 1)
    assert parse_both(data).gpus == RECORDS
    data = BASE.replace(b"<product_name>NVIDIA H100 80GB HBM3", b"<product_name>" + big, 1)
    report = parse_both(data)
    assert report.gpus[0].product_name is None
    assert [(n.gpu_index, n.field, n.reason) for n in report.nulled] == [(0, "product_name", "too_long")]
