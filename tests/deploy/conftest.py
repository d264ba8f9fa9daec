"""The live stack shared by the observability and docs tests: started once for the package.

The simulated cluster, a ``gpuid`` process with every feature the dashboard
and the alerts use (two exporters, one of them down, a small spool, leader
election, node labels, per-node GPU series, bug reports) and a real
Prometheus scraping it every second with the alert rules loaded. The work
happens only once Prometheus is scraping, so rates and percentiles have
something to show.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpuid.kube.client import connect
from gpuid.sim import SimCluster, bundled_capture
from tests.support.execpolicy import ExecTally, shipped_policy

from .manifests import DEPLOYMENT
from .stack import Prometheus, SimThread, free_port, http_get, start_gpuid, wait_until

RULES = DEPLOYMENT / "prometheus" / "gpuid.rules.yaml"
H100, GB200 = "gpuid-h100-sxm-x8", "gpuid-gb200-x4"
HEALTHY_NODES = 16  # enough records (~85 KB) to overflow the 64 KiB spool of the unreachable http exporter
DRIVER_LABELS = {"app.kubernetes.io/component": "nvidia-driver"}


@dataclass
class Live:
    prometheus: Prometheus
    metrics: str  # gpuid's /metrics once all the work is done
    gpus: int  # GPUs in the simulated cluster that scan successfully
    log: Path  # gpuid's stdout and stderr, merged as `kubectl logs` shows them


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in a /metrics text that carry ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def build_cluster(cluster: SimCluster) -> None:
    """Healthy H100 nodes, one whose nvidia-smi fails, and a GB200 node with a driver pod."""
    for i in range(HEALTHY_NODES):
        cluster.add_node(f"gpu-{i}", capture=H100)
        cluster.add_pod(f"dp-gpu-{i}", node=f"gpu-{i}")
    cluster.add_node("broken", capture=H100)
    cluster.add_pod("dp-broken", node="broken")
    cluster.set_exec("dp-broken", exit_code=9, stderr=b"NVIDIA-SMI has failed")
    cluster.add_node("gb200", capture=GB200)
    cluster.add_pod("dp-gb200", node="gb200")
    cluster.add_pod("driver-gb200", node="gb200", labels=DRIVER_LABELS, containers=("nvidia-driver-ctr",))


def scenario(sim: SimThread) -> int:
    """Build the cluster, drop every watch, ask for a bug report; the GPUs that will be observed."""
    sim.change(build_cluster)
    sim.change(lambda cluster: cluster.drop_watches(reset=True))

    # What `kubectl annotate node gb200 gpuid.io/bug-report-request=r1` sends.
    async def request_bug_report() -> None:
        clients = await connect(str(sim.kubeconfig))
        try:
            body = {"metadata": {"annotations": {"gpuid.io/bug-report-request": "r1"}}}
            await clients.core.patch_node("gb200", body, _content_type="application/merge-patch+json")
        finally:
            await clients.close()

    sim.run(request_bug_report)
    return HEALTHY_NODES * len(bundled_capture(H100).gpu_uuids()) + len(bundled_capture(GB200).gpu_uuids())


def gpuid_env(work: Path, kubeconfig: Path, port: int) -> dict[str, str]:
    return {
        "CLUSTER_NAME": "observability",
        "KUBECONFIG": str(kubeconfig),
        "SERVER_PORT": str(port),
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",  # as in the image: every line reaches the log at once
        "SHUTDOWN_GRACE": "2s",
        "EXPORTER_TYPE": "stdout,http",
        "HTTP_ENDPOINT": f"http://127.0.0.1:{free_port()}/readings",  # nobody listens: failures, spool, drops
        "SPOOL_DIR": str(work / "spool"),
        "SPOOL_MAX_BYTES": "65536",
        "EXPORT_BATCH_SIZE": "4",
        "EXPORT_QUEUE_SIZE": "8",
        "LEADER_ELECTION": "true",
        "LEASE_NAMESPACE": "gpuid",
        "POD_NAME": "gpuid-0",
        "NODE_LABELS": "true",
        "NODE_GPU_METRICS": "true",  # the series behind GpuidGPUsMissing
        "BUG_REPORT_ENABLED": "true",
        "BUG_REPORT_DIR": str(work / "bug-reports"),
    }


def work_done(port: int, gpus: int) -> str | None:
    """gpuid's /metrics once it has done everything the dashboard shows, else None."""
    text = http_get(f"http://127.0.0.1:{port}/metrics")
    done = (
        sample(text, "gpuid_gpus_observed") == gpus
        and sample(text, "gpuid_scans_total", result="exec_error") >= 1
        and sample(text, "gpuid_export_dropped_total", exporter="http") > 0
        and sample(text, "gpuid_watch_restarts_total") >= 1
        and sample(text, "gpuid_bug_reports_total", trigger="request", result="success") == 1
        and sample(text, "gpuid_node_label_updates_total") >= 1
    )
    return text if done else None


@pytest.fixture(scope="package")
def live(tmp_path_factory: pytest.TempPathFactory, exec_tally: ExecTally) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("observability")
    with SimThread(work / "kubeconfig", admission=shipped_policy().admit) as sim:
        port = free_port()
        gpuid = start_gpuid(gpuid_env(work, sim.kubeconfig, port), work / "gpuid.log")
        try:
            prometheus = Prometheus(work, f"127.0.0.1:{port}", [RULES])
            try:
                wait_until(lambda: prometheus.query('up{job="gpuid"} == 1'), 20, "Prometheus to scrape gpuid")
                gpus = scenario(sim)
                metrics = wait_until(
                    lambda: gpuid.check_alive() or work_done(port, gpus),
                    40,
                    "gpuid to scan, fail, spool, drop and collect a bug report",
                )
                yield Live(prometheus, metrics, gpus, gpuid.log)
            finally:
                prometheus.stop()
        finally:
            assert gpuid.stop() == 0, gpuid.tail()
    exec_tally.check("the observability stack (tests/deploy)", sim.server.connect_log)
