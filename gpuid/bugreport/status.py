"""Bug-report requests and their outcome, as annotations on the node.

``kubectl annotate node N gpuid.io/bug-report-request=<id> --overwrite``
asks for a report; gpuid answers in ``gpuid.io/bug-report-status``, a
compact JSON object (request id, result, file, locations, size, sha256,
time, error) that ``kubectl get node -o jsonpath`` shows and ``jq`` reads.
The status is the durable memory of what was done: a request whose id the
status already answers is not collected again after a restart, while one
left ``running`` by a process that died is.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from gpuid.errors import ApiError
from gpuid.kube.api import call
from gpuid.kube.objects import NodeInfo
from gpuid.records import utc_now

BUG_REPORT_REQUEST = "gpuid.io/bug-report-request"
BUG_REPORT_STATUS = "gpuid.io/bug-report-status"
ANNOTATIONS = (BUG_REPORT_REQUEST, BUG_REPORT_STATUS)  # what the node watch keeps for bug reports
RUNNING, SUCCESS, FAILED = "running", "success", "failed"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class ReportStatus:
    request: str
    result: str  # running, success or failed
    file: str = ""
    locations: tuple[str, ...] = field(default=())
    size: int | None = None
    sha256: str = ""
    time: str = field(default_factory=functools.partial(utc_now, "seconds"))
    error: str = ""

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["locations"] = list(self.locations)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> ReportStatus | None:
        """The status in an annotation value; None when absent or not ours."""
        try:
            data = json.loads(text) if text else None
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("request"), str):
            return None
        return cls(
            request=data["request"], result=str(data.get("result", "")), time=str(data.get("time", ""))
        )


def pending_request(node: NodeInfo) -> str | None:
    """The request id on ``node`` that no final status answers yet, else None."""
    request = node.annotation(BUG_REPORT_REQUEST).strip()
    if not request:
        return None
    status = ReportStatus.parse(node.annotation(BUG_REPORT_STATUS))
    if status is not None and status.request == request and status.result != RUNNING:
        return None
    return request


async def write_status(core: Any, node: str, status: ReportStatus) -> None:
    """Merge-patch the status annotation onto ``node``; ``ApiError`` when the API server refuses."""
    body = {"metadata": {"annotations": {BUG_REPORT_STATUS: status.to_json()}}}
    what = f"could not write {BUG_REPORT_STATUS} on node {node}"
    try:
        await call(core.patch_node, node, body, what=what, _content_type=MERGE_PATCH)
    except ApiError as e:
        if e.status == 403:
            raise ApiError(f"{e}; gpuid needs `patch` on nodes", status=403, transient=False) from None
        raise
