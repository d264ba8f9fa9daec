"""Records and captures for tests and benchmarks: one record factory, one place captures are found.

The simulated cluster's captures are bundled in the package (``gpuid/sim/captures``);
the other real captures live in ``tests/fixtures/nvidia-smi``. ``capture_path``
finds a capture in either, so no file is kept twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from gpuid.delivery.delivery import Delivery
from gpuid.delivery.settings import DeliverySettings
from gpuid.records import GpuChange, GPUReading, MigDevice

FIXTURES = Path(__file__).parent.parent / "fixtures"
SMI_FIXTURES = FIXTURES / "nvidia-smi"
BUNDLED = Path(__file__).parent.parent.parent / "gpuid" / "sim" / "captures"


def xml_captures() -> Iterator[Path]:
    """Every real ``nvidia-smi -q -x`` capture: the bundled ones and the test fixtures, by name."""
    yield from sorted([*BUNDLED.glob("*.xml"), *(SMI_FIXTURES / "xml").glob("*.xml")], key=lambda p: p.name)


def capture_path(name: str) -> Path:
    """The XML capture called ``name`` (file name without ``.xml``), wherever it is kept."""
    for path in (BUNDLED / f"{name}.xml", SMI_FIXTURES / "xml" / f"{name}.xml"):
        if path.exists():
            return path
    raise FileNotFoundError(f"no capture named {name!r}")


def reading(
    n: int = 0,
    *,
    node: str = "node-a",
    machine: str | None = "i-0aaa",
    pod_uid: str = "pod-1",
    observed_at: str = "2025-01-02T03:04:05.000Z",
    cluster: str = "test",
) -> GPUReading:
    """A fully populated record; ``n`` makes the GPU unique."""
    return GPUReading(
        cluster=cluster,
        node=node,
        machine=machine,
        source=f"gpu-operator/nvidia-device-plugin-{node}",
        pod_uid=pod_uid,
        gpu_uuid=f"GPU-{n:08d}-aaaa-bbbb-cccc-000000000000",
        gpu_serial=f"16520{n:08d}",
        chassis_serial="1821223000123",
        module_id=n % 8 + 1,
        gpu_index=n % 8,
        pci_bus_id=f"00000000:{n % 256:02X}:00.0",
        product_name="NVIDIA H100 80GB HBM3",
        product_architecture="Hopper",
        board_part_number="692-2G520-0200-000",
        vbios_version="96.00.74.00.01",
        driver_version="550.54.15",
        cuda_version="12.4",
        mig_mode="Enabled" if n % 2 else "Disabled",
        mig_devices=(MigDevice("MIG-1234", "1g.10gb", 1, 0),) if n % 2 else (),
        observed_at=observed_at,
    )


def change(
    n: int = 0, *, kind: str = "replaced", node: str = "node-a", observed_at: str = "2025-01-02T03:04:05.000Z"
) -> GpuChange:
    """A ``gpu_changed`` record: GPU ``n`` took the place of GPU ``n + 100`` in its slot."""
    new, old = reading(n), reading(n + 100)
    return GpuChange(
        cluster="test",
        node=node,
        machine="i-0aaa",
        change=kind,
        gpu_uuid=new.gpu_uuid,
        old_uuid=old.gpu_uuid if kind in ("replaced", "moved") else None,
        old_serial=old.gpu_serial if kind != "added" else None,
        new_serial=new.gpu_serial,
        pci_bus_id=new.pci_bus_id,
        from_node="node-b" if kind == "moved" else None,
        observed_at=observed_at,
    )


def fast_delivery(**overrides: Any) -> DeliverySettings:
    """``DeliverySettings`` with test-speed batching and retries; keyword overrides."""
    values: dict[str, Any] = {"batch_size": 50, "flush_interval": 0.02, "retry_max_backoff": 0.1}
    return DeliverySettings(**(values | overrides))


@contextlib.asynccontextmanager
async def delivering(delivery: Delivery, grace: float = 5.0) -> AsyncIterator[Delivery]:
    """Run ``delivery`` for the block, then shut it down the way the app does."""
    task = asyncio.create_task(delivery.run(), name="test-delivery")
    try:
        yield delivery
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await delivery.drain(grace)
