"""Stand-ins for the exporters the fleet dashboard joins gpuid with: dcgm-exporter and kube-state-metrics.

Each serves realistic metric text at ``/metrics`` on 127.0.0.1 from a thread.
The dcgm-exporter text follows its GPU template (labels ``gpu``, ``UUID``,
``pci_bus_id``, ``device``, ``modelName``, ``Hostname``, the driver version;
``container``/``namespace``/``pod`` on a GPU a pod holds), and is built from
the same nvidia-smi captures the simulated nodes answer with, so the UUIDs
are those gpuid reads. kube-state-metrics' ``kube_node_status_capacity``
names extended resources the way it does (``nvidia.com/gpu`` ->
``nvidia_com_gpu``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gpuid.smi.parse import parse_smi_xml

DCGM_HELP = {
    "DCGM_FI_DEV_GPU_TEMP": ("gauge", "GPU temperature (in C)."),
    "DCGM_FI_DEV_XID_ERRORS": ("gauge", "Value of the last XID error encountered."),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": ("counter", "Total number of double-bit volatile ECC errors."),
}


def dcgm_text(nodes: Mapping[str, bytes], values: Mapping[tuple[str, str], float], busy: str = "") -> str:
    """dcgm-exporter's /metrics for ``nodes`` (node -> nvidia-smi XML); ``values[(metric, uuid)]`` beats 0.

    ``busy`` is the UUID of a GPU held by a pod (pod labels, as with dcgm-exporter's pod mapping).
    """
    lines: list[str] = []
    for metric, (kind, text) in DCGM_HELP.items():
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        for node, xml in nodes.items():
            report = parse_smi_xml(xml)
            for gpu in report.gpus:
                labels = (
                    f'gpu="{gpu.gpu_index}",UUID="{gpu.gpu_uuid}",pci_bus_id="{gpu.pci_bus_id}",'
                    f'device="nvidia{gpu.gpu_index}",modelName="{gpu.product_name}",Hostname="{node}",'
                    f'DCGM_FI_DRIVER_VERSION="{report.driver_version}"'
                )
                if gpu.gpu_uuid == busy:
                    labels += ',container="trainer",namespace="ml",pod="trainer-0"'
                default = 41.0 if metric == "DCGM_FI_DEV_GPU_TEMP" else 0.0
                lines.append(f"{metric}{{{labels}}} {values.get((metric, gpu.gpu_uuid), default):g}")
    return "\n".join(lines) + "\n"


def ksm_text(gpus: Mapping[str, int]) -> str:
    """kube-state-metrics' node capacity for ``gpus`` (node -> nvidia.com/gpu)."""
    lines = [
        "# HELP kube_node_status_capacity The capacity for different resources of a node.",
        "# TYPE kube_node_status_capacity gauge",
    ]
    for node, count in gpus.items():
        lines.append(f'kube_node_status_capacity{{node="{node}",resource="cpu",unit="core"}} 96')
        lines.append(
            f'kube_node_status_capacity{{node="{node}",resource="nvidia_com_gpu",unit="integer"}} {count}'
        )
    return "\n".join(lines) + "\n"


class MetricsEndpoint:
    """Serves ``text`` at http://127.0.0.1:<port>/metrics until the block ends."""

    def __init__(self, text: str) -> None:
        self.text = text
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = endpoint.text.encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-standin", daemon=True
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> MetricsEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
