"""Crusoe-compatible API mode: a vendor API asks this node for a bug report, gpuid uploads it.

Per node (a DaemonSet with ``NODE_NAME``): every ``API_POLL_INTERVAL`` gpuid
calls ``GET {API_BASE_URL}/check-tasks?vm_id=<VM_ID>``; an answer
``{"status": "success", "event_id": ...}`` means "collect now". The report is
collected like any other (verified, into the local directory, a temp one if
``BUG_REPORT_DIR`` is unset) and POSTed to ``/upload-logs`` as multipart
``file, vm_id, event_id, node_name, status, message``, streamed from disk;
a failed collection is reported as JSON with ``status: "failed"``. Poll and
upload errors are logged, counted and retried at the next poll.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import tempfile
from pathlib import Path

import aiohttp
import structlog

from gpuid.bugreport.jobs import Job
from gpuid.bugreport.reporter import BugReporter
from gpuid.bugreport.settings import ApiSettings
from gpuid.bugreport.sinks import LocalDirectory
from gpuid.errors import BugReportError
from gpuid.metrics import Metrics

log = structlog.get_logger("gpuid.bugreport")
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


class ApiPoller:
    def __init__(self, settings: ApiSettings, reporter: BugReporter, node: str, metrics: Metrics) -> None:
        self.settings = settings
        self._reporter = reporter
        self._node = node
        self._metrics = metrics
        self._handled: collections.deque[str] = collections.deque(maxlen=100)

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            local = self._local_directory(stack)
            session = await stack.enter_async_context(aiohttp.ClientSession(timeout=HTTP_TIMEOUT))
            while True:
                try:
                    await self.poll_once(session, local)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                    self._metrics.bug_report_errors.labels("api").inc()
                    log.warning(
                        "bug-report API call failed", node=self._node, error=f"{type(e).__name__}: {e}"
                    )
                await asyncio.sleep(self.settings.poll_interval)

    def _local_directory(self, stack: contextlib.AsyncExitStack) -> LocalDirectory:
        """The reporter's local directory, or a temporary one for this run (reports are uploaded)."""
        for destination in self._reporter.destinations:
            if isinstance(destination, LocalDirectory):
                return destination
        temp = Path(tempfile.mkdtemp(prefix="gpuid-bug-reports-"))
        stack.callback(shutil.rmtree, temp, True)
        local = LocalDirectory(temp, keep=1)
        self._reporter.destinations.append(local)
        return local

    async def poll_once(self, session: aiohttp.ClientSession, local: LocalDirectory) -> bool:
        """One check-tasks round trip; True when a task was handled (uploaded or reported failed)."""
        base, vm_id = self.settings.base_url, self.settings.vm_id
        async with session.get(f"{base}/check-tasks", params={"vm_id": vm_id}) as resp:
            resp.raise_for_status()
            task = await resp.json(content_type=None)
        if not isinstance(task, dict) or task.get("status") != "success" or not task.get("event_id"):
            return False
        event_id = str(task["event_id"])
        if event_id in self._handled:
            return False
        fields = {"vm_id": vm_id, "event_id": event_id, "node_name": self._node}
        try:
            collected = await self._reporter.collect_in_turn(Job(self._node, "api", event_id))
        except BugReportError as e:
            body = {**fields, "status": "failed", "message": str(e)[:1000]}
            async with session.post(f"{base}/upload-logs", json=body) as resp:
                resp.raise_for_status()
            self._handled.append(event_id)
            return True
        path = local.node_dir(self._node) / collected.file_name
        message = f"nvidia-bug-report collected: {collected.size} bytes, sha256 {collected.sha256}"
        with path.open("rb") as report:  # aiohttp reads it in chunks, off the event loop
            form = aiohttp.FormData()
            for name, value in {**fields, "status": "success", "message": message}.items():
                form.add_field(name, value)
            form.add_field("file", report, filename=collected.file_name, content_type="application/gzip")
            async with session.post(f"{base}/upload-logs", data=form) as resp:
                resp.raise_for_status()
        self._handled.append(event_id)
        log.info(
            "bug report uploaded to the API", node=self._node, event_id=event_id, file=collected.file_name
        )
        return True
