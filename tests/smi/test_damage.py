"""Damaged replies: damage costs at most the value or the GPU it sits in, never the node.

Every input here is generated from a real capture (the 8 x H100 one) or from a
small hand-made document; every parse runs both readers and checks they agree.
"""

from __future__ import annotations

import pytest

from gpuid.records import GpuFacts, MigDevice, NulledField, SkippedGpu
from tests.smi.smidocs import H100, MIG0, UUID0, UUID1, UUID2, one_gpu, parse_both, smi_doc, xml

BASE = xml(H100)
RECORDS = parse_both(BASE).gpus


def with_process(name: bytes) -> bytes:
    """The H100 capture with one process, named ``name`` (raw bytes), in every GPU's <processes>."""
    process = (
        b"<process_info><gpu_instance_id>N/A</gpu_instance_id><compute_instance_id>N/A"
        b"</compute_instance_id><pid>4242</pid><type>C</type><process_name>" + name + b"</process_name>"
        b"<used_memory>500 MiB</used_memory></process_info>"
    )
    return BASE.replace(b"<processes>", b"<processes>" + process)


@pytest.mark.parametrize(
    "name",
    [
        b"/usr/bin/python3",
        b"\xff\xfe\xc3(python",  # invalid UTF-8
        b"py\x00th\x01on\x1b[0m",  # NUL and control characters
        b"train & eval",  # a raw ampersand
        b"a &nbsp; b &#0; c &#xFFFE;",  # unknown entity, references to characters XML forbids
        b"if a < b",  # a stray '<'
        b"a<b",  # markup that is not markup
        b"x]]>y",
        b"<unclosed>",
        b"</process_name></process_info></processes></gpu>",  # closes what it should not
    ],
)
def test_damage_in_process_names_costs_nothing(name: bytes) -> None:
    report = parse_both(with_process(name))
    assert report.gpus == RECORDS
    assert (report.skipped, report.nulled, report.warnings) == ((), (), ())


def test_clean_process_names_keep_the_fast_path() -> None:
    assert parse_both(with_process(b"/usr/bin/python3")).fast_path
    assert parse_both(with_process(b"py\x00th\x01on")).fast_path  # damage the fast path never reads


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<graphics_clock>", b"<graphics_clock><broken>"),  # clocks: an element never closed
        (b"</volatile>", b"</volatile></mismatched>"),  # ECC: an end tag that closes nothing
        (b"<temperature>", b"<temperature attr='x>"),  # a start tag cut short
        (b"<fan_speed>", b"<fan_speed>\x00\x08&"),
    ],
)
def test_broken_markup_outside_identity_fields_costs_nothing(old: bytes, new: bytes) -> None:
    damaged = BASE.replace(old, new)
    assert damaged != BASE
    report = parse_both(damaged)
    assert report.gpus == RECORDS
    assert (report.skipped, report.nulled) == ((), ())


def gpu_doc(*bodies: str) -> bytes:
    return smi_doc("".join(f'<gpu id="00000000:0{i}:00.0">{body}</gpu>' for i, body in enumerate(bodies)))


def test_one_gpu_without_a_usable_uuid_is_skipped_and_the_others_kept() -> None:
    report = parse_both(
        gpu_doc(
            f"<uuid>{UUID0}</uuid>",
            "<serial>123</serial>",
            "<uuid>[Unknown Error]</uuid>",
            f"<uuid>{UUID1}x</uuid>",
            f"<uuid>{'GPU-' + 'a' * 300}</uuid>",
            f"<uuid>{UUID2[:-1]}\x01</uuid>",
            f"<uuid>{UUID1}</uuid><pci><pci_bus_id>00000000:99:00.0</pci_bus_id></pci>",
        )
    )
    assert [(g.gpu_index, g.gpu_uuid, g.pci_bus_id) for g in report.gpus] == [
        (0, UUID0, "00000000:00:00.0"),
        (6, UUID1, "00000000:99:00.0"),
    ]
    assert report.skipped == (
        SkippedGpu(1, "00000000:01:00.0", "uuid_missing"),
        SkippedGpu(2, "00000000:02:00.0", "uuid_placeholder"),
        SkippedGpu(3, "00000000:03:00.0", "uuid_invalid"),
        SkippedGpu(4, "00000000:04:00.0", "uuid_too_long"),
        SkippedGpu(5, "00000000:05:00.0", "uuid_invalid"),
    )


def test_broken_markup_inside_a_uuid_costs_that_gpu_only() -> None:
    bad = BASE.replace(b"<uuid>GPU-ab6ab95d", b"<uuid><GPU-ab6ab95d", 1)
    report = parse_both(bad)
    assert report.gpus == RECORDS[1:]
    assert report.skipped == (SkippedGpu(0, "00000000:04:00.0", "uuid_invalid"),)


def test_damage_inside_an_identity_field_costs_that_field() -> None:
    bad = (
        BASE.replace(b"<serial>1652923034028</serial>", b"<serial>16529\xff23034028</serial>", 1)
        .replace(
            b"<vbios_version>96.00.A5.00.01</vbios_version>", b"<vbios_version>96 & 1</vbios_version>", 1
        )
        .replace(b"<product_architecture>Hopper", b"<product_architecture>Hop\x07per", 1)
        .replace(b"<board_part_number>", b"<board_part_number>" + b"9" * (1024 * 1024), 1)
        .replace(b"<module_id>4</module_id>", b"<module_id>4<b>2</module_id>", 1)
    )
    report = parse_both(bad)
    gpu = report.gpus[0]
    assert gpu == GpuFacts(
        gpu_uuid=RECORDS[0].gpu_uuid,
        gpu_serial=None,
        chassis_serial=None,
        module_id=None,
        gpu_index=0,
        pci_bus_id=RECORDS[0].pci_bus_id,
        product_name=RECORDS[0].product_name,
        product_architecture=None,
        board_part_number=None,
        vbios_version=None,
        mig_mode="Disabled",
    )
    assert report.gpus[1:] == RECORDS[1:]
    assert report.nulled == (
        NulledField(0, "gpu_serial", "invalid"),
        NulledField(0, "module_id", "invalid"),
        NulledField(0, "product_architecture", "invalid"),
        NulledField(0, "board_part_number", "too_long"),
        NulledField(0, "vbios_version", "invalid"),
    )


PLACEHOLDERS = [
    "Unknown Error",
    "[Unknown Error]",
    "Not Supported",
    "[Not Supported]",
    "Insufficient Permissions",
    "[Insufficient Permissions]",
    "GPU is lost",
    "[GPU is lost]",
    "Not Available",
    "not available",
    "REDACTED",
    "[redacted]",
    "UNKNOWN ERROR",
    "[ Not Supported ]",
]
# element path -> (record field, how it reads in one_gpu)
FIELDS = {
    "serial": ("gpu_serial", "<serial>{}</serial>"),
    "chassis": (
        "chassis_serial",
        "<platformInfo><chassis_serial_number>{}</chassis_serial_number></platformInfo>",
    ),
    "module_id": ("module_id", "<platformInfo><module_id>{}</module_id></platformInfo>"),
    "pci": ("pci_bus_id", "<pci><pci_bus_id>{}</pci_bus_id></pci>"),
    "product_name": ("product_name", "<product_name>{}</product_name>"),
    "architecture": ("product_architecture", "<product_architecture>{}</product_architecture>"),
    "board_part": ("board_part_number", "<board_part_number>{}</board_part_number>"),
    "vbios": ("vbios_version", "<vbios_version>{}</vbios_version>"),
    "mig_mode": ("mig_mode", "<mig_mode><current_mig>{}</current_mig></mig_mode>"),
}


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
@pytest.mark.parametrize("where", sorted(FIELDS))
def test_every_placeholder_is_null_in_every_identity_field(where: str, placeholder: str) -> None:
    field, template = FIELDS[where]
    report = parse_both(one_gpu(f"<uuid>{UUID0}</uuid>" + template.format(placeholder)))
    gpu = report.gpus[0]
    # pci_bus_id is null, so the <gpu id> attribute stands in
    assert getattr(gpu, field) == ("00000000:01:00.0" if field == "pci_bus_id" else None)
    assert report.nulled == (NulledField(0, field, "placeholder"),)


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
def test_every_placeholder_is_null_in_uuids_driver_and_mig_devices(placeholder: str) -> None:
    device = (
        f"<mig_device><uuid>{placeholder}</uuid><profile>{placeholder}</profile>"
        f"<gpu_instance_id>{placeholder}</gpu_instance_id><compute_instance_id>{placeholder}"
        "</compute_instance_id></mig_device>"
    )
    doc = smi_doc(
        f"<gpu><uuid>{placeholder}</uuid></gpu><gpu><uuid>{UUID0}</uuid><mig_devices>{device}</mig_devices></gpu>",
        top=f"<driver_version>{placeholder}</driver_version><cuda_version>{placeholder}</cuda_version>",
    )
    report = parse_both(doc)
    assert (report.driver_version, report.cuda_version) == (None, None)
    assert report.skipped == (SkippedGpu(0, None, "uuid_placeholder"),)
    assert report.gpus[0].mig_devices == (MigDevice(None, None, None, None),)
    assert {(n.gpu_index, n.field, n.reason) for n in report.nulled} == {
        (None, "driver_version", "placeholder"),
        (None, "cuda_version", "placeholder"),
        *((1, f"mig_devices[0].{f}", "placeholder") for f in ("uuid", "profile", "gpu_instance_id")),
        (1, "mig_devices[0].compute_instance_id", "placeholder"),
    }


@pytest.mark.parametrize("serial", ["0", "00000000000000", "[0000000000000]", "", "N/A"])
def test_zero_and_empty_serials_are_null(serial: str) -> None:
    body = f"<uuid>{UUID0}</uuid><serial>{serial}</serial>"
    body += f"<platformInfo><chassis_serial_number>{serial}</chassis_serial_number></platformInfo>"
    report = parse_both(one_gpu(body))
    assert (report.gpus[0].gpu_serial, report.gpus[0].chassis_serial) == (None, None)
    noted = () if serial in ("", "N/A") else ("placeholder", "placeholder")
    assert tuple(n.reason for n in report.nulled) == noted


@pytest.mark.parametrize(
    ("value", "expected", "reason"),
    [
        ("2147483647", 2147483647, None),
        ("2147483648", None, "invalid"),
        ("-1", None, "invalid"),
        ("4 ", 4, None),
        ("0x10", None, "invalid"),
        ("٣", None, "invalid"),  # a digit, but not an ASCII one
        ("9" * 300, None, "too_long"),
    ],
)
def test_integers_fit_postgres_integer(value: str, expected: int | None, reason: str | None) -> None:
    device = f"<mig_device><gpu_instance_id>{value}</gpu_instance_id></mig_device>"
    body = f"<uuid>{UUID0}</uuid><platformInfo><module_id>{value}</module_id></platformInfo>"
    report = parse_both(one_gpu(body + f"<mig_devices>{device}</mig_devices>"))
    gpu = report.gpus[0]
    assert (gpu.module_id, gpu.mig_devices[0].gpu_instance_id) == (expected, expected)
    noted = (
        () if reason is None else ((0, "module_id", reason), (0, "mig_devices[0].gpu_instance_id", reason))
    )
    assert tuple((n.gpu_index, n.field, n.reason) for n in report.nulled) == noted


@pytest.mark.parametrize(
    ("uuid", "kept"),
    [
        (MIG0, True),
        (MIG0.upper().replace("MIG-", "MIG-"), True),
        (f"MIG-{UUID0}/1/0", True),
        ("MIG-1", False),
        (f"MIG-{UUID0}/1", False),
        (UUID0, False),
        (MIG0 + "\x00", False),
    ],
)
def test_mig_uuids_must_have_nvidias_shape(uuid: str, kept: bool) -> None:
    device = f"<mig_device><uuid>{uuid}</uuid></mig_device>"
    report = parse_both(one_gpu(f"<uuid>{UUID0}</uuid><mig_devices>{device}</mig_devices>"))
    assert report.gpus[0].mig_devices[0].uuid == (uuid if kept else None)
    assert report.nulled == (() if kept else (NulledField(0, "mig_devices[0].uuid", "invalid"),))


def test_every_kept_string_is_capped_and_printable() -> None:
    name = "N" * 256
    report = parse_both(one_gpu(f"<uuid>{UUID0}</uuid><product_name>{name}</product_name>"))
    assert report.gpus[0].product_name == name
    report = parse_both(one_gpu(f"<uuid>{UUID0}</uuid><product_name>{name}N</product_name>"))
    assert report.gpus[0].product_name is None
    assert report.nulled == (NulledField(0, "product_name", "too_long"),)
    for bad in ("A\tB", "A\nB", "A\x7fB", "A\x85B", "A\ufffeB"):
        report = parse_both(one_gpu(f"<uuid>{UUID0}</uuid><product_name>{bad}</product_name>"))
        assert report.gpus[0].product_name is None
        assert report.nulled == (NulledField(0, "product_name", "invalid"),)
