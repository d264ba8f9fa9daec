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

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from gpuid.cluster import NodeInfo
from gpuid.errors import ApiError

RUNNING, SUCCESS, FAILED = "running", "success", "failed"
MERGE_PATCH = "application/merge-patch+json"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ReportStatus:
    request: str
    result: str  # running, success or failed
    file: str = ""
    locations: tuple[str, ...] = field(default=())
    size: int | None = None
    sha256: str = ""
    time: str = field(default_factory=utc_now)
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
    request = node.bug_report_request.strip()
    if not request:
        return None
    status = ReportStatus.parse(node.bug_report_status)
    if status is not None and status.request == request and status.result != RUNNING:
        return None
    return request


async def write_status(core: Any, node: str, status: ReportStatus, annotation: str) -> None:
    """Merge-patch the status annotation onto ``node``; ``ApiError`` when the API server refuses."""
    body = {"metadata": {"annotations": {annotation: status.to_json()}}}
    try:
        await core.patch_node(node, body, _content_type=MERGE_PATCH)
    except ApiException as e:
        hint = "; gpuid needs `patch` on nodes" if e.status == 403 else ""
        raise ApiError(
            f"could not write {annotation} on node {node}: HTTP {e.status} {e.reason}{hint}",
            status=e.status,
            transient=e.status is None or e.status >= 500 or e.status == 429,
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise ApiError(f"could not write {annotation} on node {node}: {type(e).__name__}: {e}") from e
