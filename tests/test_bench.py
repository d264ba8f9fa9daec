"""The benchmarks' own code paths on a tiny fleet: what they compare must be the same answer.

Correctness only (benchmarks print speed; tests never assert it): the floor's
byte pick agrees with ``parse_smi_xml`` on real captures, the floor and the
reference read every GPU of a simulated fleet over TLS, and the CPU split
files stacks under the concern a reader would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.cpusplit import category
from bench.floor import floor_sweep, identity
from bench.reference import reference_sweep
from gpuid.sim import SimApiServer, SimCluster
from gpuid.smi.parse import parse_smi_xml
from tests.support.app import GB200, H100, Sim, add_gpu_node
from tests.support.records import capture_path


@pytest.mark.parametrize("capture", [H100, GB200])
def test_floor_picks_the_same_identity_as_the_parser(capture: str) -> None:
    data = capture_path(capture).read_bytes()
    picked = identity(data)
    parsed = parse_smi_xml(data).gpus
    assert [g["uuid"] for g in picked] == [g.gpu_uuid for g in parsed]
    assert [g["serial"] for g in picked] == [g.gpu_serial for g in parsed]
    assert [g["pci_bus_id"] for g in picked] == [g.pci_bus_id for g in parsed]
    assert [g["product_name"] for g in picked] == [g.product_name for g in parsed]


@pytest.fixture
async def tls_sim(tmp_path: Path) -> AsyncIterator[Sim]:
    cluster = SimCluster()
    async with SimApiServer(cluster, tls=True) as server:
        sim = Sim(cluster, server, server.write_kubeconfig(tmp_path / "kubeconfig"))
        for i in range(3):
            add_gpu_node(sim, f"n{i}", H100)
        yield sim


async def test_floor_and_reference_read_every_gpu_of_a_tiny_fleet_over_tls(tls_sim: Sim) -> None:
    pods = [f"dp-n{i}" for i in range(3)]
    _, floor_gpus = await floor_sweep(str(tls_sim.kubeconfig), "gpu-operator", pods, workers=2)
    _, reference_uuids = await reference_sweep(str(tls_sim.kubeconfig), "gpu-operator", pods, workers=2)
    assert floor_gpus == reference_uuids == 3 * 8
    assert tls_sim.cluster.request_counts["exec"] == 6


@pytest.mark.parametrize(
    ("stack", "concern"),
    [
        ("_run_once (asyncio/base_events.py:1922);select (selectors.py:468)", "event loop + sockets"),
        ("_read (gpuid/kube/informer.py:120);loads (json/__init__.py:346)", "watch"),
        ("to_json (gpuid/records.py:90);dumps (json/__init__.py:231)", "records + export + logs"),
        ("_frames (gpuid/kube/podexec.py:160);read (aiohttp/streams.py:1)", "exec transport"),
        ("_run_once (asyncio/base_events.py:1922);recv (ssl.py:1)", "exec transport"),
        ("_run (asyncio/events.py:80);data_received (asyncio/sslproto.py:1)", "exec transport"),
        ("read_gpus (gpuid/scan/read.py:74);XML (xml/etree/ElementTree.py:1)", "parse"),
        ("_scan (gpuid/scan/scanner.py:160);collect (gpuid/smi/xml.py:61)", "parse"),
        ("<module> (elsewhere.py:1)", "other"),
    ],
)
def test_cpu_split_files_each_stack_under_its_concern(stack: str, concern: str) -> None:
    assert category(stack) == concern
