"""The fleet signals on a real Prometheus: the dcgm-exporter join, and every panel of the fleet dashboard.

A ``gpuid`` process scans a simulated cluster with the per-GPU and per-node
series on; Prometheus scrapes it beside stand-ins of dcgm-exporter and
kube-state-metrics that serve realistic text for the same GPUs. The join the
docs recommend must return the board serial of a GPU with an Xid; every
Prometheus query of the fleet dashboard must return data, and every SQL
query must run against PostgreSQL tables the postgres exporter wrote.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from gpuid.config import load_settings
from gpuid.exporters.postgres.exporter import PostgresExporter
from gpuid.sim import SimCluster, bundled_capture
from tests.support.records import capture_path, reading

from .conftest import RULES, sample
from .manifests import DEPLOYMENT, ROOT, assert_tiled, tool
from .stack import Prometheus, SimThread, free_port, http_get, start_gpuid, wait_until
from .standins import MetricsEndpoint, dcgm_text, ksm_text

DASHBOARD = json.loads((DEPLOYMENT / "grafana" / "gpuid-fleet.json").read_text())
DOCS = (ROOT / "docs" / "fleet.md").read_text()
JOIN = (
    "DCGM_FI_DEV_XID_ERRORS * on (UUID) group_left (serial, chassis_serial)"
    " max by (UUID, serial, chassis_serial) (gpuid_gpu_info)"
)
# Real captures, a different set of GPUs on each node: node -> capture.
NODES = {
    "h100-a": "gpuid-h100-sxm-x8",
    "h100-b": "nvidia-k8s-test-infra-h100",
    "gb200-a": "gpuid-gb200-x4",
    "v100-short": "datakit-v100s-pcie-x8",
}
XML = {node: capture_path(capture).read_bytes() for node, capture in NODES.items()}
XID_GPU = bundled_capture("gpuid-h100-sxm-x8").gpu_uuids()[2]  # on h100-a: serial 1653023018213
ECC_GPU = bundled_capture("gpuid-gb200-x4").gpu_uuids()[1]  # on gb200-a
GPUS = 8 + 8 + 4 + 7  # v100-short answers with 7 of its 8


@dataclass
class Fleet:
    prometheus: Prometheus
    metrics: str


def build(cluster: SimCluster) -> None:
    for node, capture in NODES.items():
        cluster.add_capture(capture, XML[node])
        cluster.add_node(node, capture=capture)
        cluster.add_pod(f"dp-{node}", node=node)
    silent = cluster.capture("datakit-v100s-pcie-x8").gpu_uuids()[6]
    cluster.remove_gpu("v100-short", silent)  # fell off the bus: the node still advertises 8
    cluster.add_node("broken", capture="gpuid-h100-sxm-x8")  # advertises GPUs, nvidia-smi fails: never read
    cluster.add_pod("dp-broken", node="broken")
    cluster.set_exec("dp-broken", exit_code=9, stderr=b"NVIDIA-SMI has failed")


def swap(cluster: SimCluster) -> None:
    old = cluster.capture("nvidia-k8s-test-infra-h100").gpu_uuids()[0]
    cluster.swap_gpu(
        "h100-b", old, new_uuid="GPU-5e1f0c2a-9b7d-4c3e-8a21-0f6d3b9e7a41", new_serial="1653124012345"
    )
    cluster.restart_container("dp-h100-b")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet")
    values = {("DCGM_FI_DEV_XID_ERRORS", XID_GPU): 79.0, ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", ECC_GPU): 2.0}
    with (
        SimThread(work / "kubeconfig") as sim,
        MetricsEndpoint(dcgm_text(XML, values, busy=XID_GPU)) as dcgm,
        MetricsEndpoint(ksm_text({**dict.fromkeys(NODES, 8), "gb200-a": 4, "broken": 8})) as ksm,
    ):
        port = free_port()
        env = {
            "CLUSTER_NAME": "fleet",
            "KUBECONFIG": str(sim.kubeconfig),
            "SERVER_PORT": str(port),
            "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE": "2s",
            "GPU_INFO_METRIC": "true",
            "NODE_GPU_METRICS": "true",
            "GPU_CHANGE_EVENTS": "true",
        }
        gpuid = start_gpuid(env, work / "gpuid.log")
        try:
            jobs = {"dcgm-exporter": dcgm.target, "kube-state-metrics": ksm.target}
            prometheus = Prometheus(work, f"127.0.0.1:{port}", [RULES], jobs)
            try:
                wait_until(
                    lambda: len(prometheus.query("up == 1")) == 3, 20, "Prometheus to scrape all three"
                )
                sim.change(build)
                wait_until(lambda: gpus_read(port) == GPUS, 30, "gpuid to read every GPU")
                sim.change(swap)
                metrics = wait_until(lambda: changed(port), 30, "gpuid to report the swap")
                yield Fleet(prometheus, metrics)
            finally:
                prometheus.stop()
        finally:
            assert gpuid.stop() == 0, gpuid.tail()


def gpus_read(port: int) -> int:
    return sum(
        1
        for line in http_get(f"http://127.0.0.1:{port}/metrics").splitlines()
        if line.startswith("gpuid_gpu_info{")
    )


def changed(port: int) -> str | None:
    text = http_get(f"http://127.0.0.1:{port}/metrics")
    return text if sample(text, "gpuid_gpu_changes_total", change="replaced") == 1 else None


def test_the_documented_join_gives_an_xid_its_board_serial(fleet: Fleet) -> None:
    assert JOIN in DOCS
    query = f"max by (UUID, Hostname, pci_bus_id, pod, serial, chassis_serial) ({JOIN}) > 0"
    [xid] = wait_until(lambda: fleet.prometheus.query(query), 20, "the join to return the Xid")
    assert float(xid["value"][1]) == 79
    assert xid["metric"] == {
        "UUID": XID_GPU,
        "Hostname": "h100-a",
        "pci_bus_id": "00000000:0B:00.0",
        "pod": "trainer-0",
        "serial": "1653023018213",
    }  # chassis_serial: empty on HGX H100, so Prometheus drops it
    every = fleet.prometheus.query(JOIN)
    # dcgm-exporter's view (28 GPUs) less the GPU v100-short lost and the one swapped out of h100-b.
    assert len(every) == 26
    assert all(r["metric"]["serial"] for r in every)


def test_the_join_keeps_a_gb200_chassis_serial(fleet: Fleet) -> None:
    [gb200] = fleet.prometheus.query(
        f"{JOIN.replace('DCGM_FI_DEV_XID_ERRORS', 'DCGM_FI_DEV_ECC_DBE_VOL_TOTAL')} > 0"
    )
    assert (gb200["metric"]["Hostname"], gb200["metric"]["chassis_serial"]) == ("gb200-a", "1821225190819")


def test_promtool_finds_nothing_but_dcgm_exporters_label_names(fleet: Fleet) -> None:
    proc = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=fleet.metrics,
        capture_output=True,
        text=True,
        check=False,
    )
    # UUID, Hostname, modelName: camelCase on purpose, spelled as dcgm-exporter spells them.
    problems = (proc.stdout + proc.stderr).strip().splitlines()
    assert set(problems) == {"gpuid_gpu_info label names should be written in 'snake_case' not 'camelCase'"}


def test_missing_gpus_show_in_the_gauges(fleet: Fleet) -> None:
    missing = fleet.prometheus.query("gpuid_node_gpu_capacity - gpuid_node_gpus > 0")
    assert [(r["metric"]["node"], float(r["value"][1])) for r in missing] == [("v100-short", 1.0)]
    assert sample(fleet.metrics, "gpuid_nodes_missing_gpus") == 1


def prometheus_panels() -> list[tuple[str, str]]:
    return [
        (p["title"], t["expr"])
        for p in DASHBOARD["panels"]
        if p.get("datasource", {}).get("type") == "prometheus"
        for t in p["targets"]
    ]


def sql_panels() -> list[tuple[str, str]]:
    return [
        (p["title"], t["rawSql"])
        for p in DASHBOARD["panels"]
        if p.get("datasource", {}).get("type") == "grafana-postgresql-datasource"
        for t in p["targets"]
    ]


def test_every_prometheus_panel_of_the_fleet_dashboard_returns_data(fleet: Fleet) -> None:
    [job] = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "job"]
    match = re.fullmatch(r"label_values\((\w+), job\)", job["query"])
    assert match
    jobs = "|".join(fleet.prometheus.api("label/job/values", **{"match[]": match.group(1)}))
    assert jobs == "gpuid"
    queries = [(t, e.replace("$job", jobs).replace("$__rate_interval", "1m")) for t, e in prometheus_panels()]

    def empty() -> list[str]:
        found = [(t, fleet.prometheus.query(e)) for t, e in queries]
        return [
            f"{t}: {r}" for t, r in found if not r or not all(math.isfinite(float(x["value"][1])) for x in r)
        ]

    wait_until(lambda: not empty(), 30, f"data for every panel; still without: {empty()}")
    by_title = {t: fleet.prometheus.query(e) for t, e in queries}
    assert float(by_title["GPUs"][0]["value"][1]) == GPUS
    models = {r["metric"]["modelName"]: float(r["value"][1]) for r in by_title["GPUs by model"]}
    assert models == {"NVIDIA H100 80GB HBM3": 16, "NVIDIA GB200": 4, "Tesla V100S-PCIE-32GB": 7}
    assert [r["metric"]["node"] for r in by_title["GPU nodes gpuid has not read"]] == ["broken"]
    assert [r["metric"]["serial"] for r in by_title["Xid errors by board serial"]] == ["1653023018213"]
    changes = {r["metric"]["change"] for r in by_title["GPU changes over time"]}
    assert changes == {"added", "removed", "replaced", "moved"}


def test_the_fleet_dashboard_is_importable_with_both_data_sources_as_variables() -> None:
    assert DASHBOARD["uid"] == "gpuid-fleet"
    assert "__inputs" not in DASHBOARD
    sources = {v["name"]: v["query"] for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"}
    assert sources == {"datasource": "prometheus", "postgres": "grafana-postgresql-datasource"}
    panels = DASHBOARD["panels"]
    assert_tiled(panels)
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in ("${datasource}", "${postgres}")
            assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
    assert len(prometheus_panels()) == 9
    assert len(sql_panels()) == 3
    assert all('job=~"$job"' in expr for _, expr in prometheus_panels())


def grafana_sql(sql: str, serial: str, start: datetime, end: datetime) -> str:
    """What Grafana sends for a panel: its macros and variables expanded (sqlstring quotes and escapes)."""
    quoted = "'" + serial.replace("'", "''") + "'"
    sql = sql.replace("${serial:sqlstring}", quoted).replace("${stale:sqlstring}", "'24h'")
    return re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        sql,
    )


async def test_every_sql_panel_runs_on_the_tables_the_postgres_exporter_writes(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)

    def at(delta: timedelta) -> str:
        return (now - delta).isoformat().replace("+00:00", "Z")

    history = [
        [reading(1, node="gpu-1", machine="i-01", observed_at=at(timedelta(days=3)))],  # stale since
        [reading(2, node="gpu-1", machine="i-01", observed_at=at(timedelta(days=2)))],
        [reading(2, node="gpu-2", machine="i-02", observed_at=at(timedelta(hours=1)))],  # moved
        [reading(3, node="gpu-2", machine="i-02", observed_at=at(timedelta(minutes=5)))],
    ]
    exporter = PostgresExporter.from_settings(load_settings(pg_env).exporters)
    await exporter.open()
    try:
        for batch in history:
            await exporter.export(batch)
    finally:
        await exporter.close()
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        await conn.execute(f"SET search_path TO {pg_env['POSTGRES_SCHEMA']}")
        rows = {
            title: await conn.fetch(
                grafana_sql(sql, reading(2).gpu_serial or "", now - timedelta(days=7), now)
            )
            for title, sql in sql_panels()
        }
    finally:
        await conn.close()
    [where] = rows["Where is this serial"]
    assert (where["node"], where["machine"], where["moves"]) == ("gpu-2", "i-02", 1)
    [move] = rows["Recent moves"]
    assert (move["gpu_uuid"], move["from_node"], move["to_node"]) == (reading(2).gpu_uuid, "gpu-1", "gpu-2")
    [stale] = rows["Stale GPUs"]
    assert stale["gpu_uuid"] == reading(1).gpu_uuid


def test_a_hostile_serial_stays_a_string() -> None:
    sql = dict(sql_panels())["Where is this serial"]
    assert "${serial:sqlstring}" in sql  # Grafana quotes and escapes it; never '$serial' pasted raw
    assert "'$serial'" not in sql
    assert (
        grafana_sql(sql, "x' OR '1'='1", datetime.now(UTC), datetime.now(UTC)).count("'x'' OR ''1''=''1'")
        == 2
    )
