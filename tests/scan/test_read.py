"""What real nodes print around and inside nvidia-smi's XML costs only what it damages, and is counted."""

from __future__ import annotations

import json

from gpuid.sim import bundled_capture
from tests.support.app import H100, Sim, eventually, running_app


def add_node_answering(sim: Sim, node: str, xml: bytes) -> None:
    sim.cluster.add_capture(node, xml)
    sim.cluster.add_node(node, capture=node)
    sim.cluster.add_pod(f"dp-{node}", node=node)


async def test_a_warning_around_the_xml_is_logged_counted_and_the_node_inventoried(
    sim: Sim, log_output: object
) -> None:
    xml = bundled_capture(H100).xml
    warned = b"WARNING: infoROM is corrupted at gpu 0000:04:00.0\n" + xml + b"\nWARNING: again\n"
    add_node_answering(sim, "n1", warned)
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 8, what="all 8 GPUs")
        assert run.sample("gpuid_smi_warnings_total") == 2
        assert run.sample("gpuid_scans_total", result="parse_error") == 0
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]  # type: ignore[attr-defined]
    [warning] = [x for x in lines if x["event"] == "nvidia-smi printed text around its XML"]
    assert (warning["node"], warning["pod"]) == ("n1", "gpu-operator/dp-n1")
    assert any("infoROM is corrupted" in t for t in warning["text"])


async def test_a_gpu_without_a_usable_uuid_costs_only_that_gpu(sim: Sim) -> None:
    xml = bundled_capture(H100).xml
    first = xml.index(b"<uuid>")
    end = xml.index(b"</uuid>", first)
    broken = xml[:first] + b"<uuid>Unknown Error" + xml[end:]  # GPU 0's UUID is an NVML error string
    add_node_answering(sim, "n1", broken)
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 7, what="the 7 GPUs with a UUID")
        assert run.sample("gpuid_smi_gpus_skipped_total", reason="uuid_placeholder") == 1
        assert "Unknown Error" not in {r.gpu_uuid for r in run.memory.records}
        assert run.sample("gpuid_scans_total", result="success") == 1


async def test_an_nvml_error_string_is_never_a_serial(sim: Sim) -> None:
    xml = bundled_capture(H100).xml
    start = xml.index(b"<serial>") + len(b"<serial>")
    end = xml.index(b"</serial>", start)
    add_node_answering(sim, "n1", xml[:start] + b"[Insufficient Permissions]" + xml[end:])
    async with running_app(sim) as run:
        await eventually(lambda: len(run.memory.records) == 8)
        [gpu0] = [r for r in run.memory.records if r.gpu_index == 0]
        assert gpu0.gpu_serial is None
        assert run.sample("gpuid_smi_values_nulled_total", field="gpu_serial", reason="placeholder") == 1
