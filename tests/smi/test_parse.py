"""gpuid.smi.parse against real nvidia-smi captures and driver quirks; the -L listing and the MIG merge.

Expected values per fixture are copied from tests/fixtures/nvidia-smi/MANIFEST.md
(the spec), never computed by the parser under test.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from gpuid.errors import ParseError
from gpuid.records import MigDevice, NulledField, SmiListing, SmiReport
from gpuid.smi.parse import duplicate_uuids, merge_mig, parse_smi_list, parse_smi_xml
from tests.smi.smidocs import (
    CAPTURES,
    LIST_DIR,
    MIG0,
    MIG1,
    SIM_CAPTURES,
    UUID0,
    UUID1,
    one_gpu,
    parse_both,
    smi_doc,
    xml,
)

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
    # second batch (values from the capture census in tests/fixtures/nvidia-smi/MANIFEST.md)
    "a0s-gtx1080-x2-460.xml": ("460.27.04", 2, 2, 0, None, None, 0),
    "a0s-quadro-p2000-418.xml": ("418.56", 1, 1, 1, None, None, 0),
    "datakit-gtx1050-no-prolog.xml": ("515.65.01", 1, 1, 0, None, None, 0),
    "hadoop-p100-pcie-x2-375-v8.xml": ("375.66", 2, 2, 2, None, None, 0),
    "lampaa-gtx1050-windows-436.xml": ("436.48", 1, 1, 0, None, None, 0),
    "lampaa-quadro-p2200-450.xml": ("450.80.02", 1, 1, 1, None, None, 0),
    "nvidia-k8s-test-infra-gb200-lost-mock.xml": ("580.65.06", 2, 2, 2, "1822725100200", "Disabled", 0),
    "nvidia-k8s-test-infra-gb300.xml": ("580.173.02", 4, 4, 2, "1820000000001", "Disabled", 0),
    "nvidia-k8s-test-infra-vr-nvl72-rubin-615.xml": ("615.23", 4, 4, 2, "1820000000001", "Disabled", 0),
    "openpai-gt730-trimmed-384.xml": ("384.111", 1, 1, 0, None, None, 0),
    "openpai-gtx1070-x6-384.xml": ("384.66", 6, 6, 0, None, None, 0),
    "openpai-k80-x4-azure-domains.xml": ("430.26", 4, 4, 2, None, None, 0),
    "openpai-rtx2080ti-x2-410.xml": ("410.73", 2, 2, 0, None, None, 0),
    "openpai-v100-sxm3-retired-pages.xml": ("410.104", 1, 1, 1, None, None, 0),
    "rai-grid-k520-v7.xml": ("352.99", 1, 1, 1, None, None, 0),
    "telegraf-a10g-zero-serial.xml": ("515.105.01", 1, 1, 0, None, None, 0),
    "telegraf-dual-rtx-a5000-v13.xml": ("590.44.01", 2, 2, 2, None, None, 0),
    "telegraf-grid-p4-1q-vgpu-windows.xml": ("513.46", 1, 1, 0, None, None, 0),
    "telegraf-gt-1030-470.xml": ("470.74", 1, 1, 0, None, None, 0),
    "telegraf-gtx-1070-ti-trimmed-no-driver.xml": (None, 1, 1, 0, None, None, 0),
    "telegraf-quadro-p2000-v12.xml": ("525.125.06", 1, 1, 1, None, None, 0),
    "telegraf-rtx-3060-v12.xml": ("570.124.04", 1, 1, 0, None, None, 0),
    "telegraf-rtx-3080-windows-wddm.xml": ("536.40", 1, 1, 0, None, None, 0),
    "telegraf-rtx-3090-v12-placeholder-uuid.xml": ("525.147.05", 1, 1, 0, None, None, 0),
    "telegraf-rtx-4000-sff-ada-v13.xml": ("595.84", 1, 1, 0, None, None, 0),
    "telegraf-rtx-pro-6000-blackwell-maxq.xml": ("590.44.01", 1, 1, 1, None, None, 0),
}
# Real captures gpuid refuses, and why: exactly the refusal, never a record.
REFUSED = {
    # `nvidia-smi -q -x --dtd` prints its DTD inline; gpuid never asks for it and refuses any internal subset.
    "rai-grid-k520-inline-dtd.xml": "nvidia-smi XML has a DOCTYPE internal subset (refused)",
    # hand-scrubbed into a UUID of the wrong shape: the node's only GPU has no usable identity
    "lampaa-gt730-malformed-uuid.xml": (
        "nvidia-smi XML has no GPU with a usable UUID: GPU 0 (PCI 00000000:20:00.0): uuid_invalid"
    ),
}
# Valid but unusual, read by the full parser: comments in the root (drivers 610+ explain deprecated fields).
FULL_PARSER = {"nvidia-k8s-test-infra-vr-nvl72-rubin-615.xml"}


def test_manifest_covers_every_xml_fixture() -> None:
    assert set(MANIFEST) | set(REFUSED) == set(CAPTURES)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_real_captures_give_exactly_their_refusal(name: str) -> None:
    with pytest.raises(ParseError) as refusal:
        parse_smi_xml(xml(name))
    assert str(refusal.value) == REFUSED[name]
    with pytest.raises(ParseError) as full:
        parse_smi_xml(xml(name), fast=False)
    assert str(full.value) == REFUSED[name]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_fixture_matches_manifest(name: str) -> None:
    driver, n_gpus, n_uuids, n_serials, chassis, mig_mode, n_mig = MANIFEST[name]
    report = parse_both(xml(name))
    assert report.fast_path == (name not in FULL_PARSER)
    assert (report.warnings, report.skipped) == ((), ())
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


def test_values_are_stripped_and_other_strings_keep_zero() -> None:
    body = f"<uuid>\n\t {UUID0} \n</uuid><serial> 0042 </serial><vbios_version>0</vbios_version>"
    body += "<product_name>[N/A]</product_name><product_architecture>N/A</product_architecture>"
    report = parse_both(one_gpu(body))
    gpu = report.gpus[0]
    assert (gpu.gpu_uuid, gpu.gpu_serial, gpu.vbios_version) == (UUID0, "0042", "0")
    assert (gpu.product_name, gpu.product_architecture) == (None, None)
    assert report.nulled == ()  # N/A is nvidia-smi's ordinary "not applicable": not noted


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
    bad = f"<uuid>{UUID0}</uuid><platformInfo><module_id>N/A</module_id></platformInfo>"
    assert parse_both(one_gpu(bad)).gpus[0].module_id is None


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
    crlf = parse_both(lf.replace(b"\n", b"\r\n"))
    assert crlf == parse_smi_xml(lf)
    assert crlf.fast_path


def test_comments_and_missing_declaration_are_ignored() -> None:
    original = xml("gpuid-h100-sxm-x8.xml")
    body = original.split(b"<nvidia_smi_log>", 1)[1]
    commented = b"<!-- captured by hand -->\n<nvidia_smi_log>" + body.replace(
        b"<uuid>", f"<!-- <uuid>{UUID1}</uuid> --><uuid>".encode()
    )
    report = parse_both(commented)
    assert report == parse_smi_xml(original)
    assert not report.fast_path  # a comment inside the document: the full parser reads it


def test_fields_only_count_at_their_own_depth() -> None:
    body = (
        f"<fabric><uuid>{UUID1}</uuid><serial>999</serial></fabric>"
        f"<uuid>{UUID0}</uuid>"
        "<pci><pci_bus_id>0000:04:00.0</pci_bus_id></pci><pci_bus_id>wrong</pci_bus_id>"
        "<mig_mode><current_mig>Enabled</current_mig></mig_mode><current_mig>wrong</current_mig>"
        f"<mig_devices><mig_device><uuid>{MIG0}</uuid><profile>1g.10gb</profile>"
        "<gpu_instance_id>7</gpu_instance_id><compute_instance_id>0</compute_instance_id>"
        f"<placement><uuid>{MIG1}</uuid><gpu_instance_id>99</gpu_instance_id></placement>"
        "</mig_device></mig_devices>"
    )
    doc = smi_doc(
        f"<gpu>{body}</gpu>",
        top=f"<other><gpu><uuid>{UUID1}</uuid></gpu><driver_version>1</driver_version></other>",
    )
    report = parse_both(doc)
    assert not report.fast_path
    assert report.driver_version is None
    (gpu,) = report.gpus
    assert (gpu.gpu_uuid, gpu.gpu_serial, gpu.pci_bus_id, gpu.mig_mode) == (
        UUID0,
        None,
        "0000:04:00.0",
        "Enabled",
    )
    assert gpu.mig_devices == (MigDevice(MIG0, "1g.10gb", 7, 0),)


def test_the_first_of_repeated_fields_wins_and_processes_are_never_read() -> None:
    body = (
        f"<uuid>{UUID0}</uuid><uuid>{UUID1}</uuid><pci><pci_bus_id>0000:04:00.0</pci_bus_id></pci>"
        "<pci><pci_bus_id>0000:05:00.0</pci_bus_id></pci>"
        "<processes><process_info><serial>42</serial></process_info></processes>"
        "<serial>43</serial><platformInfo><chassis_serial_number>7</chassis_serial_number></platformInfo>"
    )
    report = parse_both(one_gpu(body))
    assert report.gpus[0].gpu_uuid == UUID0
    assert report.gpus[0].pci_bus_id == "0000:04:00.0"
    assert (report.gpus[0].gpu_serial, report.gpus[0].chassis_serial) == (None, None)


def test_pci_bus_id_falls_back_to_gpu_id_attribute() -> None:
    assert parse_both(one_gpu(f"<uuid>{UUID0}</uuid>")).gpus[0].pci_bus_id == "00000000:01:00.0"


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
    assert parse_both(smi_doc(f"<gpu><uuid>{UUID0}</uuid></gpu>", top=top)).driver_version == expected


def test_list_h100_56_mig_devices_new_form() -> None:
    listing = parse_smi_list((LIST_DIR / "nvidia-gpu-exporter-h100-x8-mig-56.txt").read_text())
    assert listing.warnings == ()
    assert len(listing.devices) == 8
    devices = [d for devs in listing.devices.values() for d in devs]
    assert len(devices) == 56
    assert {len(devs) for devs in listing.devices.values()} == {7}
    assert len({d.uuid for d in devices}) == 56
    assert {d.profile for d in devices} == {"1g.10gb"}
    assert {(d.gpu_instance_id, d.compute_instance_id) for d in devices} == {(None, None)}
    first = listing.devices["GPU-63d1e50a-b952-d15c-0740-12bc14859142"][0]
    assert first.uuid == "MIG-4d0efb7d-0970-51d9-b761-0686be6b8af3"


def test_list_a100_old_form_parses_instance_ids() -> None:
    listing = parse_smi_list((LIST_DIR / "nvgpu-a100-x4-mig-old-uuid.txt").read_text())
    assert list(listing.devices) == [
        "GPU-2ac434d3-1aca-57a0-597d-1d2effdba9f3",
        "GPU-cd9ee947-34d2-d0fe-93e0-2195b3f2fd52",
        "GPU-67051dc2-cce1-4acf-d254-e76d938eda30",
        "GPU-30f9801c-a554-b6de-bd27-d5cefbf59291",
    ]
    assert listing.devices["GPU-2ac434d3-1aca-57a0-597d-1d2effdba9f3"] == (
        MigDevice("MIG-GPU-2ac434d3-1aca-57a0-597d-1d2effdba9f3/1/0", "3g.20gb", 1, 0),
        MigDevice("MIG-GPU-2ac434d3-1aca-57a0-597d-1d2effdba9f3/2/0", "3g.20gb", 2, 0),
    )
    assert listing.devices["GPU-30f9801c-a554-b6de-bd27-d5cefbf59291"] == (
        MigDevice("MIG-GPU-30f9801c-a554-b6de-bd27-d5cefbf59291/0/0", "7g.40gb", 0, 0),
    )


def test_list_without_mig() -> None:
    listing = parse_smi_list((LIST_DIR / "nvgpu-rtx3090-x1.txt").read_text())
    assert listing == SmiListing({"GPU-4738f547-e85e-3da4-ea09-dceea83a3afb": ()})


def test_list_other_lines_become_warnings_and_never_values() -> None:
    text = (
        "Warning: persistence mode is disabled\r\n\r\n"
        f"  MIG 1g.10gb Device 0: (UUID: {MIG1})\r\n"  # before any GPU
        f"GPU 0: NVIDIA A100 (UUID: {UUID0})\r\n"
        f"  MIG 1g.10gb Device 0: (UUID: {MIG0})\r\n"
        f"  MIG 2g.20gb     Device  1: (UUID: {MIG1})\r\n"
        "  MIG 3g.40gb Device 2: (UUID: MIG-not-a-uuid)\r\n"
        "  something we do not know\x00\x1b[31m\r\n"
        "GPU 1: NVIDIA A100 (UUID: [Unknown Error])\r\n"
        f"  MIG 1g.10gb Device 0: (UUID: {MIG0})\r\n"  # belongs to a GPU without a usable UUID
        f"GPU 2: NVIDIA A100 (UUID: {UUID1}\x00)\r\n" + "x" * 1000
    )
    listing = parse_smi_list(text)
    assert listing.devices == {
        UUID0: (MigDevice(MIG0, "1g.10gb", None, None), MigDevice(MIG1, "2g.20gb", None, None))
    }
    assert listing.warnings == (
        "Warning: persistence mode is disabled",
        f"MIG 1g.10gb Device 0: (UUID: {MIG1})",
        "MIG 3g.40gb Device 2: (UUID: MIG-not-a-uuid)",
        "something we do not know [31m",
        "GPU 1: NVIDIA A100 (UUID: [Unknown Error])",
        f"MIG 1g.10gb Device 0: (UUID: {MIG0})",
        f"GPU 2: NVIDIA A100 (UUID: {UUID1} )",
        "x" * 200,
    )
    assert parse_smi_list("") == SmiListing({})


def test_list_warnings_are_bounded() -> None:
    listing = parse_smi_list("".join(f"noise {i}\n" for i in range(1000)))
    assert listing.warnings == tuple(f"noise {i}" for i in range(20))


def a100_mig_report() -> SmiReport:
    return parse_smi_xml(xml("telegraf-a100-sxm4-mig.xml"))


def test_merge_mig_fills_uuids_and_profiles_from_sim_capture() -> None:
    report = a100_mig_report()
    listing = parse_smi_list((SIM_CAPTURES / "telegraf-a100-sxm4-mig.L.txt").read_text())
    merged = merge_mig(report, listing)
    devices = merged.gpus[0].mig_devices
    assert [(d.profile, d.gpu_instance_id, d.compute_instance_id) for d in devices] == [
        ("1g.20gb", gi, 0) for gi in (3, 4, 5, 6)
    ]
    assert [d.uuid for d in devices] == [d.uuid for d in listing.devices[report.gpus[0].gpu_uuid]]
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
    assert merge_mig(report, {UUID1: (MigDevice(MIG0, "1g.10gb", None, None),)}) == report


def test_merge_mig_listing_uuid_wins_over_xml_uuid() -> None:
    device = f"<mig_device><uuid>{MIG0}</uuid><gpu_instance_id>1</gpu_instance_id></mig_device>"
    report = parse_both(one_gpu(f"<uuid>{UUID0}</uuid><mig_devices>{device}</mig_devices>"))
    assert report.gpus[0].mig_devices == (MigDevice(MIG0, None, 1, None),)
    merged = merge_mig(report, SmiListing({UUID0: (MigDevice(MIG1, "1g.10gb", None, None),)}))
    assert merged.gpus[0].mig_devices == (MigDevice(MIG1, "1g.10gb", 1, None),)
    assert (merged.warnings, merged.nulled, merged.fast_path) == (report.warnings, report.nulled, True)


def test_all_zero_serial_is_null_and_noted() -> None:
    report = parse_smi_xml(xml("telegraf-tesla-t4-zero-serial.xml"))
    assert report.gpus[0].gpu_serial is None
    assert report.nulled == (NulledField(0, "gpu_serial", "placeholder"),)


def test_parse_error_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="printed nothing"):
        parse_smi_xml(b"")


def test_newest_and_oldest_real_captures_keep_their_identity() -> None:
    rubin = parse_smi_xml(xml("nvidia-k8s-test-infra-vr-nvl72-rubin-615.xml"))  # driver 615: kmd_version
    assert [(g.pci_bus_id, g.product_architecture) for g in rubin.gpus][2] == ("0000000A:81:00.0", "Rubin")
    assert rubin.gpus[0].product_name == "NVIDIA Graphics Device"
    gb300 = parse_smi_xml(xml("nvidia-k8s-test-infra-gb300.xml"))
    assert [g.module_id for g in gb300.gpus] == [2, 1, 4, 3]  # module order is not document order
    k80 = parse_smi_xml(xml("openpai-k80-x4-azure-domains.xml"))  # Azure: random non-zero PCI domains
    assert k80.gpus[0].pci_bus_id == "00001580:00:00.0"
    assert k80.gpus[0].gpu_serial == k80.gpus[3].gpu_serial == "0322416026235"  # one K80 board, two GPUs
    vgpu = parse_smi_xml(xml("telegraf-grid-p4-1q-vgpu-windows.xml"))
    assert (vgpu.gpus[0].product_name, vgpu.gpus[0].module_id) == ("GRID P4-1Q", None)
    a10g = parse_smi_xml(xml("telegraf-a10g-zero-serial.xml"))  # serial and part number all zeros
    assert (a10g.gpus[0].gpu_serial, a10g.gpus[0].board_part_number) == (None, None)
    kepler = parse_smi_xml(xml("rai-grid-k520-v7.xml"))
    assert (kepler.driver_version, kepler.gpus[0].gpu_serial) == ("352.99", "0321014026924")


def test_real_mig_listings_of_gb200_and_uneven_a100s() -> None:
    gb200 = parse_smi_list((LIST_DIR / "dra-driver-gb200-mig-1g24gb.txt").read_text())
    assert [
        (d.profile, d.uuid is not None) for d in gb200.devices["GPU-7277883e-ce1e-3b6e-6cc1-6d52e80cdb86"]
    ] == [("1g.24gb", True)]
    a100s = parse_smi_list((LIST_DIR / "spark-rapids-a100-80gb-pcie-x2-mig-uneven.txt").read_text())
    assert {uuid: len(devices) for uuid, devices in a100s.devices.items()} == {
        "GPU-aa72194b-fdd4-24b0-f659-17c929f46267": 1,
        "GPU-aa7153bf-c0ba-00ef-cdce-f861c34172f6": 2,
    }
    assert (gb200.warnings, a100s.warnings) == ((), ())
