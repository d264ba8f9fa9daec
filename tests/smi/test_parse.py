"""gpuid.smi against real nvidia-smi captures, driver quirks and hostile input.

Expected values per fixture are copied from tests/fixtures/nvidia-smi/MANIFEST.md
(the spec), never computed by the parser under test.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from gpuid.errors import ParseError
from gpuid.records import MigDevice, SmiReport
from gpuid.smi.parse import duplicate_uuids, merge_mig, parse_smi_list, parse_smi_xml
from tests.support.records import BUNDLED, SMI_FIXTURES, capture_path, xml_captures

LIST_DIR = SMI_FIXTURES / "list"


def xml(name: str) -> bytes:
    return capture_path(name.removesuffix(".xml")).read_bytes()


def smi_doc(gpus: str, top: str = "<driver_version>570.86.15</driver_version>") -> bytes:
    """A minimal ``nvidia-smi -q -x`` document around hand-written ``<gpu>`` elements."""
    return f'<?xml version="1.0" ?>\n<nvidia_smi_log>{top}{gpus}</nvidia_smi_log>\n'.encode()


def one_gpu(body: str) -> bytes:
    return smi_doc(f'<gpu id="00000000:01:00.0">{body}</gpu>')


# file: (driver, GPUs, distinct UUIDs, distinct non-null serials, chassis serial, mig mode, MIG devices)
MANIFEST = {
    "gpuid-h100-sxm-x8.xml": ("570.86.15", 8, 8, 8, None, "Disabled", 0),
    "gpuid-gb200-x4.xml": ("570.148.08", 4, 4, 2, "1821225190819", "Disabled", 0),
    "nvidia-k8s-test-infra-b200.xml": ("580.105.08", 8, 8, 8, None, "Disabled", 0),
    "nvidia-k8s-test-infra-h100.xml": ("580.105.08", 8, 8, 8, None, "Disabled", 0),
    "nvidia-k8s-test-infra-gb200.xml": ("580.173.02", 4, 4, 2, "1820000000001", "Disabled", 0),
    "nvidia-k8s-test-infra-a100.xml": ("570.148.08", 1, 1, 1, None, "Disabled", 0),
    "nvidia-k8s-test-infra-l40s.xml": ("595.91.07", 1, 1, 1, None, None, 0),
    "nvidia-k8s-test-infra-t4.xml": ("595.91.07", 1, 1, 1, None, None, 0),
    "telegraf-a100-sxm4-mig.xml": ("535.54.03", 1, 1, 1, None, "Enabled", 4),
    "telegraf-tesla-t4-zero-serial.xml": ("515.105.01", 1, 1, 0, None, None, 0),
    "telegraf-quadro-p400-no-doctype.xml": ("418.43", 1, 1, 1, None, None, 0),
    "telegraf-gtx-1660-ti-graphics-device.xml": ("418.43", 1, 1, 0, None, None, 0),
    "telegraf-rtx-3080-redacted-serial.xml": ("595.58.03", 1, 1, 0, None, None, 0),
    "telegraf-dual-2080-duplicate-uuid.xml": ("590.44.01", 2, 1, 0, None, None, 0),
    "datakit-v100s-pcie-x8.xml": ("460.73.01", 8, 8, 8, None, None, 0),
}


def test_manifest_covers_every_xml_fixture() -> None:
    assert set(MANIFEST) == {p.name for p in xml_captures()}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_fixture_matches_manifest(name: str) -> None:
    driver, n_gpus, n_uuids, n_serials, chassis, mig_mode, n_mig = MANIFEST[name]
    report = parse_smi_xml(xml(name))
    assert report.driver_version == driver
    assert len(report.gpus) == n_gpus
    assert [g.gpu_index for g in report.gpus] == list(range(n_gpus))
    assert len({g.gpu_uuid for g in report.gpus}) == n_uuids
    assert all(g.gpu_uuid.startswith("GPU-") for g in report.gpus)
    assert len({g.gpu_serial for g in report.gpus if g.gpu_serial is not None}) == n_serials
    assert {g.chassis_serial for g in report.gpus} == {chassis}
    assert {g.mig_mode for g in report.gpus} == {mig_mode}
    assert sum(len(g.mig_devices) for g in report.gpus) == n_mig
    assert len({g.pci_bus_id for g in report.gpus}) == n_gpus


def test_h100_gpu0_fields() -> None:
    report = parse_smi_xml(xml("gpuid-h100-sxm-x8.xml"))
    assert report.driver_version == "570.86.15"
    assert report.cuda_version == "12.8"
    assert not report.mig_enabled
    gpu = report.gpus[0]
    assert gpu.gpu_uuid == "GPU-ab6ab95d-8259-5551-5962-e4a7a710fbae"
    assert gpu.gpu_serial == "1652923034028"
    assert gpu.chassis_serial is None
    assert gpu.module_id == 4
    assert gpu.gpu_index == 0
    assert gpu.pci_bus_id == "00000000:04:00.0"
    assert gpu.product_name == "NVIDIA H100 80GB HBM3"
    assert gpu.product_architecture == "Hopper"
    assert gpu.vbios_version == "96.00.A5.00.01"
    assert gpu.board_part_number == "692-2G520-0200-000"
    assert gpu.mig_mode == "Disabled"
    assert gpu.mig_devices == ()


def test_gb200_keeps_four_dies_sharing_two_serials() -> None:
    report = parse_smi_xml(xml("gpuid-gb200-x4.xml"))
    assert len(report.gpus) == 4
    assert Counter(g.gpu_serial for g in report.gpus) == {"1761025346615": 2, "1761125340953": 2}
    assert {g.module_id for g in report.gpus} == {1, 2, 3, 4}
    assert {g.chassis_serial for g in report.gpus} == {"1821225190819"}
    assert not any("\r" in (g.product_name or "") + g.gpu_uuid for g in report.gpus)
    assert duplicate_uuids(report) == []


def test_all_zero_serial_is_null() -> None:
    assert parse_smi_xml(xml("telegraf-tesla-t4-zero-serial.xml")).gpus[0].gpu_serial is None


def test_redacted_serial_is_null() -> None:
    assert parse_smi_xml(xml("telegraf-rtx-3080-redacted-serial.xml")).gpus[0].gpu_serial is None


def test_leading_zero_serial_is_kept_as_string() -> None:
    gpu = parse_smi_xml(xml("telegraf-quadro-p400-no-doctype.xml")).gpus[0]
    assert gpu.gpu_serial == "0424418054852"


@pytest.mark.parametrize("value", ["N/A", "[N/A]", "", "   ", "REDACTED", "0", "0000000000000", " N/A \n"])
def test_placeholder_serials_are_null(value: str) -> None:
    body = f"<uuid>GPU-1</uuid><serial>{value}</serial>"
    body += f"<platformInfo><chassis_serial_number>{value}</chassis_serial_number></platformInfo>"
    gpu = parse_smi_xml(one_gpu(body)).gpus[0]
    assert (gpu.gpu_serial, gpu.chassis_serial) == (None, None)


def test_values_are_stripped_and_other_strings_keep_zero() -> None:
    body = "<uuid>\n\t GPU-1 \n</uuid><serial> 0042 </serial><vbios_version>0</vbios_version>"
    body += "<product_name>[N/A]</product_name><product_architecture>N/A</product_architecture>"
    gpu = parse_smi_xml(one_gpu(body)).gpus[0]
    assert (gpu.gpu_uuid, gpu.gpu_serial, gpu.vbios_version) == ("GPU-1", "0042", "0")
    assert (gpu.product_name, gpu.product_architecture) == (None, None)


def test_board_part_from_gpu_part_number_on_old_drivers() -> None:
    report = parse_smi_xml(xml("datakit-v100s-pcie-x8.xml"))
    assert {g.board_part_number for g in report.gpus} == {"900-2G500-0040-000"}
    quadro = parse_smi_xml(xml("telegraf-quadro-p400-no-doctype.xml")).gpus[0]
    assert quadro.board_part_number == "900-5G212-1701-000"


def test_chip_part_number_is_not_taken_as_board_part() -> None:
    # v13: board_part_number N/A, gpu_part_number holds the chip part (2216-202-A1).
    assert parse_smi_xml(xml("telegraf-rtx-3080-redacted-serial.xml")).gpus[0].board_part_number is None


def test_module_id_from_older_gpu_module_id() -> None:
    assert parse_smi_xml(xml("telegraf-a100-sxm4-mig.xml")).gpus[0].module_id == 4
    assert parse_smi_xml(xml("telegraf-tesla-t4-zero-serial.xml")).gpus[0].module_id == 0
    bad = "<uuid>GPU-1</uuid><platformInfo><module_id>N/A</module_id></platformInfo>"
    assert parse_smi_xml(one_gpu(bad)).gpus[0].module_id is None


def test_mig_a100_devices_from_xml() -> None:
    report = parse_smi_xml(xml("telegraf-a100-sxm4-mig.xml"))
    assert report.mig_enabled
    assert len(report.gpus) == 1  # attached_gpus says 4: the <gpu> elements win
    assert report.gpus[0].mig_devices == tuple(
        MigDevice(uuid=None, profile=None, gpu_instance_id=gi, compute_instance_id=0) for gi in (3, 4, 5, 6)
    )


def test_product_name_graphics_device() -> None:
    gpu = parse_smi_xml(xml("telegraf-gtx-1660-ti-graphics-device.xml")).gpus[0]
    assert gpu.product_name == "Graphics Device"
    assert gpu.module_id is None


def test_duplicate_uuids_are_kept_and_reported() -> None:
    report = parse_smi_xml(xml("telegraf-dual-2080-duplicate-uuid.xml"))
    assert [(g.gpu_index, g.pci_bus_id) for g in report.gpus] == [
        (0, "00000000:01:00.0"),
        (1, "00000000:02:00.0"),
    ]
    assert duplicate_uuids(report) == ["GPU-12345678-aaaa-bbbb-cccc-0123456789ab"]
    assert duplicate_uuids(parse_smi_xml(xml("gpuid-h100-sxm-x8.xml"))) == []


def test_crlf_parses_like_lf() -> None:
    lf = xml("gpuid-h100-sxm-x8.xml")
    assert b"\r" not in lf
    assert parse_smi_xml(lf.replace(b"\n", b"\r\n")) == parse_smi_xml(lf)


def test_comments_and_missing_declaration_are_ignored() -> None:
    original = xml("gpuid-h100-sxm-x8.xml")
    body = original.split(b"<nvidia_smi_log>", 1)[1]
    commented = b"<!-- captured by hand -->\n<nvidia_smi_log>" + body.replace(
        b"<uuid>", b"<!-- <uuid>GPU-from-comment</uuid> --><uuid>"
    )
    assert parse_smi_xml(commented) == parse_smi_xml(original)


def test_fields_only_count_at_their_own_depth() -> None:
    body = (
        "<fabric><uuid>GPU-nested</uuid><serial>999</serial></fabric>"
        "<uuid>GPU-real</uuid>"
        "<pci><pci_bus_id>0000:04:00.0</pci_bus_id></pci><pci_bus_id>wrong</pci_bus_id>"
        "<mig_mode><current_mig>Enabled</current_mig></mig_mode><current_mig>wrong</current_mig>"
        "<mig_devices><mig_device><uuid>MIG-1</uuid><profile>1g.10gb</profile>"
        "<gpu_instance_id>7</gpu_instance_id><compute_instance_id>0</compute_instance_id>"
        "<placement><uuid>MIG-nested</uuid><gpu_instance_id>99</gpu_instance_id></placement>"
        "</mig_device></mig_devices>"
    )
    doc = smi_doc(
        f"<gpu>{body}</gpu>",
        top="<other><gpu><uuid>GPU-not-a-gpu</uuid></gpu><driver_version>1</driver_version></other>",
    )
    report = parse_smi_xml(doc)
    assert report.driver_version is None
    (gpu,) = report.gpus
    assert (gpu.gpu_uuid, gpu.gpu_serial, gpu.pci_bus_id, gpu.mig_mode) == (
        "GPU-real",
        None,
        "0000:04:00.0",
        "Enabled",
    )
    assert gpu.mig_devices == (MigDevice("MIG-1", "1g.10gb", 7, 0),)


def test_pci_bus_id_falls_back_to_gpu_id_attribute() -> None:
    assert parse_smi_xml(one_gpu("<uuid>GPU-1</uuid>")).gpus[0].pci_bus_id == "00000000:01:00.0"


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ("<driver_version>N/A</driver_version><kmd_version>610.12</kmd_version>", "610.12"),
        ("<kmd_version>610.12</kmd_version>", "610.12"),
        ("<driver_version>580.1</driver_version><kmd_version>610.12</kmd_version>", "580.1"),
        ("", None),
    ],
)
def test_kmd_version_replaces_deprecated_driver_version(top: str, expected: str | None) -> None:
    assert parse_smi_xml(smi_doc("<gpu><uuid>GPU-1</uuid></gpu>", top=top)).driver_version == expected


NVML_MISMATCH = b"Failed to initialize NVML: Driver/library version mismatch\r\n"
ONE_GPU_BODY = b"<nvidia_smi_log><gpu><uuid>GPU-1</uuid></gpu></nvidia_smi_log>"
PASSWD_ENTITY = (
    b'<?xml version="1.0"?>\n<!DOCTYPE nvidia_smi_log [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b"<nvidia_smi_log><gpu><uuid>&x;</uuid></gpu></nvidia_smi_log>"
)
BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE nvidia_smi_log [\n<!ENTITY lol "lol">\n'
    + b"".join(
        b'<!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>\n<nvidia_smi_log><gpu><uuid>&lol9;</uuid></gpu></nvidia_smi_log>"
)
HOSTILE = {
    "billion laughs": BILLION_LAUGHS,
    "external entity": PASSWD_ENTITY,
    "parameter entity": b'<!DOCTYPE nvidia_smi_log [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
    b"<nvidia_smi_log/>",
    "empty internal subset": b"<!DOCTYPE x [ ]>" + ONE_GPU_BODY,
    "undeclared entity behind external DTD": b'<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">'
    b"<nvidia_smi_log><gpu><uuid>GPU-&x;</uuid></gpu></nvidia_smi_log>",
    "truncated": xml("gpuid-h100-sxm-x8.xml")[: len(xml("gpuid-h100-sxm-x8.xml")) // 2],
    "empty": b"",
    "whitespace": b" \n\t\n",
    "shell error": b"sh: 1: nvidia-smi: not found\n",
    "html": b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
    "wrong root": b"<?xml version='1.0'?><nvidia_smi><gpu><uuid>GPU-1</uuid></gpu></nvidia_smi>",
    "no gpu": smi_doc("", top="<attached_gpus>8</attached_gpus>"),
    "gpu without uuid": one_gpu("<serial>1652923034028</serial>"),
    "gpu with N/A uuid": one_gpu("<uuid>N/A</uuid>"),
    "uuid only nested": one_gpu("<fabric><uuid>GPU-nested</uuid></fabric>"),
    "long garbage": b"x" * 100_000,
    "garbage after long blank": b" \r\n" * 100 + NVML_MISMATCH,
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_or_broken_input_raises_parse_error(name: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_smi_xml(HOSTILE[name])
    message = str(caught.value)
    assert 0 < len(message) <= 200
    assert "root:" not in message  # no /etc/passwd line ever leaks
    assert "lollol" not in message


def test_external_entity_is_never_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER\n")
    for doc in (
        f'<!DOCTYPE nvidia_smi_log [<!ENTITY x SYSTEM "{secret.as_uri()}">]>'
        "<nvidia_smi_log><gpu><uuid>&x;</uuid></gpu></nvidia_smi_log>",
        f'<!DOCTYPE nvidia_smi_log SYSTEM "{secret.as_uri()}">'
        "<nvidia_smi_log><gpu><uuid>GPU-&x;</uuid></gpu></nvidia_smi_log>",
    ):
        with pytest.raises(ParseError) as caught:
            parse_smi_xml(doc.encode())
        assert "TOP-SECRET" not in str(caught.value)


def test_plain_external_doctype_is_accepted_but_not_loaded(tmp_path: Path) -> None:
    dtd = tmp_path / "evil.dtd"
    dtd.write_text("<<< not a DTD: loading it would be a syntax error")
    doc = f'<!DOCTYPE nvidia_smi_log SYSTEM "{dtd.as_uri()}">'.encode() + ONE_GPU_BODY
    assert parse_smi_xml(doc).gpus[0].gpu_uuid == "GPU-1"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("shell error", "not XML: 'sh: 1: nvidia-smi: not found'"),
        ("garbage after long blank", "not XML: 'Failed to initialize NVML: Driver/library version mismatch'"),
        ("truncated", "malformed: "),
        ("html", "<html>"),
        ("wrong root", "<nvidia_smi>"),
        ("no gpu", "no <gpu>"),
        ("gpu without uuid", "GPU 0"),
        ("external entity", "internal subset"),
        ("undeclared entity behind external DTD", "entity"),
    ],
)
def test_parse_error_messages_say_what_is_wrong(name: str, fragment: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_smi_xml(HOSTILE[name])
    assert fragment in str(caught.value)


def test_truncated_xml_error_names_line_and_column() -> None:
    with pytest.raises(ParseError, match=r"at line \d+, column \d+"):
        parse_smi_xml(HOSTILE["truncated"])


def test_list_h100_56_mig_devices_new_form() -> None:
    listing = parse_smi_list((LIST_DIR / "nvidia-gpu-exporter-h100-x8-mig-56.txt").read_text())
    assert len(listing) == 8
    devices = [d for devs in listing.values() for d in devs]
    assert len(devices) == 56
    assert {len(devs) for devs in listing.values()} == {7}
    assert len({d.uuid for d in devices}) == 56
    assert {d.profile for d in devices} == {"1g.10gb"}
    assert {(d.gpu_instance_id, d.compute_instance_id) for d in devices} == {(None, None)}
    first = listing["GPU-63d1e50a-b952-d15c-0740-12bc14859142"][0]
    assert first.uuid == "MIG-4d0efb7d-0970-51d9-b761-0686be6b8af3"


def test_list_a100_old_form_parses_instance_ids() -> None:
    listing = parse_smi_list((LIST_DIR / "nvgpu-a100-x4-mig-old-uuid.txt").read_text())
    assert list(listing) == [
        "GPU-2ac434d3-1aca-57a0-597d-1d2effdba9f3",
        "GPU-cd9ee947-34d2-d0fe-93e0-2195b3f2fd52",
        "GPU-67051dc2-cce1-4acf-d254-e76d938eda30",
        "GPU-30f9801c-a554-b6de-bd27-d5cefbf59291",
    ]
    assert listing["GPU-2ac434d3-1aca-57a0-597d-1d2effdba9f3"] == (
        MigDevice("MIG-GPU-2ac434d3-1aca-57a0-597d-1d2effdba9f3/1/0", "3g.20gb", 1, 0),
        MigDevice("MIG-GPU-2ac434d3-1aca-57a0-597d-1d2effdba9f3/2/0", "3g.20gb", 2, 0),
    )
    assert listing["GPU-30f9801c-a554-b6de-bd27-d5cefbf59291"] == (
        MigDevice("MIG-GPU-30f9801c-a554-b6de-bd27-d5cefbf59291/0/0", "7g.40gb", 0, 0),
    )


def test_list_without_mig() -> None:
    listing = parse_smi_list((LIST_DIR / "nvgpu-rtx3090-x1.txt").read_text())
    assert listing == {"GPU-4738f547-e85e-3da4-ea09-dceea83a3afb": ()}


def test_list_ignores_unknown_lines_and_accepts_unpadded_spacing() -> None:
    text = (
        "Warning: persistence mode is disabled\r\n\r\n"
        "GPU 0: NVIDIA A100 (UUID: GPU-aaa)\r\n"
        "  MIG 1g.10gb Device 0: (UUID: MIG-bbb)\r\n"
        "  MIG 2g.20gb     Device  1: (UUID: MIG-ccc)\r\n"
        "  something we do not know\r\n"
    )
    assert parse_smi_list(text) == {
        "GPU-aaa": (MigDevice("MIG-bbb", "1g.10gb", None, None), MigDevice("MIG-ccc", "2g.20gb", None, None))
    }
    assert parse_smi_list("") == {}


def test_list_mig_line_before_gpu_line_is_an_error() -> None:
    with pytest.raises(ParseError, match="before any GPU"):
        parse_smi_list("  MIG 1g.10gb     Device  0: (UUID: MIG-4d0efb7d-0970-51d9-b761-0686be6b8af3)\n")


def a100_mig_report() -> SmiReport:
    return parse_smi_xml(xml("telegraf-a100-sxm4-mig.xml"))


def test_merge_mig_fills_uuids_and_profiles_from_sim_capture() -> None:
    report = a100_mig_report()
    listing = parse_smi_list((BUNDLED / "telegraf-a100-sxm4-mig.L.txt").read_text())
    merged = merge_mig(report, listing)
    devices = merged.gpus[0].mig_devices
    assert [(d.profile, d.gpu_instance_id, d.compute_instance_id) for d in devices] == [
        ("1g.20gb", gi, 0) for gi in (3, 4, 5, 6)
    ]
    assert [d.uuid for d in devices] == [d.uuid for d in listing[report.gpus[0].gpu_uuid]]
    assert all(d.uuid is not None and d.uuid.startswith("MIG-") for d in devices)
    assert report.gpus[0].mig_devices[0].uuid is None  # the input report is untouched
    assert dataclasses.replace(merged.gpus[0], mig_devices=()) == dataclasses.replace(
        report.gpus[0], mig_devices=()
    )


def test_merge_mig_prefers_listing_when_counts_differ() -> None:
    report = a100_mig_report()
    uuid = report.gpus[0].gpu_uuid
    five = tuple(MigDevice(f"MIG-{i}", "1g.20gb", None, None) for i in range(5))
    merged = merge_mig(report, {uuid: five}).gpus[0].mig_devices
    assert [(d.uuid, d.gpu_instance_id) for d in merged] == [
        ("MIG-0", 3),
        ("MIG-1", 4),
        ("MIG-2", 5),
        ("MIG-3", 6),
        ("MIG-4", None),
    ]
    two = merge_mig(report, {uuid: five[:2]}).gpus[0].mig_devices
    assert [(d.uuid, d.gpu_instance_id, d.compute_instance_id) for d in two] == [
        ("MIG-0", 3, 0),
        ("MIG-1", 4, 0),
    ]


def test_merge_mig_takes_listing_instance_ids_when_present() -> None:
    report = a100_mig_report()
    listed = (MigDevice("MIG-GPU-x/9/1", "7g.80gb", 9, 1),)
    merged = merge_mig(report, {report.gpus[0].gpu_uuid: listed})
    assert merged.gpus[0].mig_devices == listed


def test_merge_mig_leaves_unlisted_gpus_alone() -> None:
    report = a100_mig_report()
    assert merge_mig(report, {}) == report
    assert merge_mig(report, {report.gpus[0].gpu_uuid: ()}) == report
    assert merge_mig(report, {"GPU-elsewhere": (MigDevice("MIG-1", "1g.10gb", None, None),)}) == report


def test_merge_mig_listing_uuid_wins_over_xml_uuid() -> None:
    device = "<mig_device><uuid>MIG-from-xml</uuid><gpu_instance_id>1</gpu_instance_id></mig_device>"
    report = parse_smi_xml(one_gpu(f"<uuid>GPU-1</uuid><mig_devices>{device}</mig_devices>"))
    assert report.gpus[0].mig_devices == (MigDevice("MIG-from-xml", None, 1, None),)
    merged = merge_mig(report, {"GPU-1": (MigDevice("MIG-from-L", "1g.10gb", None, None),)})
    assert merged.gpus[0].mig_devices == (MigDevice("MIG-from-L", "1g.10gb", 1, None),)
