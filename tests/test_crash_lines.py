"""Every line gpuid writes on stderr is JSON, also when it dies: config errors, a taken port, bugs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from gpuid.app import App
from gpuid.app.wiring import Parts
from gpuid.config import load_settings
from gpuid.kube.client import KubeClients
from gpuid.log import loop_exception_handler
from tests.support.app import GB200, Sim, add_gpu_node
from tests.support.memory import MemoryExporter


async def run_gpuid(*args: str, timeout: float = 30, **env: str) -> tuple[int, list[dict[str, Any]]]:
    """Run the real ``gpuid`` process to its end; its exit code and every stderr line, parsed as JSON."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuid",
        *args,
        env={**os.environ, "LOG_FORMAT": "auto", **env},  # auto: stderr is a pipe, so JSON
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    lines = err.decode().splitlines()
    assert lines, "gpuid said nothing on stderr"
    return proc.returncode, [json.loads(line) for line in lines]  # a line that is not JSON fails here


def errors(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["level"] == "error"]


async def test_a_configuration_error_is_one_json_line_and_exit_2() -> None:
    code, lines = await run_gpuid(CLUSTER_NAME="c", WORKERS="nan")
    assert code == 2
    assert len(lines) == 1
    assert lines[0]["event"] == "configuration error"
    assert lines[0]["error"] == "WORKERS='nan' is invalid: not a whole number (use the digits 0-9 only)"
    assert lines[0]["error_type"] == "ConfigError"


async def test_a_usage_error_is_a_json_line_too() -> None:
    code, lines = await run_gpuid("--workers", CLUSTER_NAME="c")
    assert code == 2
    assert [line["event"] for line in lines] == ["configuration error"]
    assert "--workers: expected one argument" in lines[0]["error"]


async def test_a_bad_demo_size_is_a_configuration_error() -> None:
    code, lines = await run_gpuid("demo", "--nodes", "1000000")
    assert code == 2
    assert [line["event"] for line in lines] == ["configuration error"]
    assert "--nodes: must be between 1 and 100" in lines[0]["error"]


async def test_python_warnings_are_json_lines_too() -> None:
    script = (
        "from gpuid.log import configure_logging; configure_logging(); import warnings; warnings.warn('old')"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-W", "always", "-c", script, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    [line] = [json.loads(text) for text in err.decode().splitlines()]
    assert (line["logger"], line["level"]) == ("py.warnings", "warning")
    assert "UserWarning: old" in line["event"]


async def test_a_port_already_in_use_is_a_json_line_and_exit_1(sim: Sim) -> None:
    add_gpu_node(sim, "n1", GB200)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = await run_gpuid(CLUSTER_NAME="c", KUBECONFIG=str(sim.kubeconfig), SERVER_PORT=str(port))
    assert code == 1
    [error] = errors(lines)
    assert error["event"] == "gpuid cannot go on"
    assert f"cannot serve /metrics on port {port}" in error["error"]
    assert "address already in use" in error["error"]
    assert lines[-1]["event"] == "gpuid stopped"


async def test_an_unexpected_exception_is_one_json_line_with_a_compact_traceback(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{{{ not yaml")  # the YAML parser raises what nobody wraps
    code, lines = await run_gpuid(CLUSTER_NAME="c", KUBECONFIG=str(kubeconfig), SERVER_PORT="0")
    assert code == 1
    [error] = errors(lines)
    assert error["event"] == "gpuid crashed"
    assert error["error_type"] == "ParserError"
    assert "flow mapping" in error["error"]
    assert "client.py" in error["traceback"]  # gpuid's own frames, then where it broke
    assert "\n" not in error["traceback"]


class BrokenFeatureApp(App):
    """The real App with one more task that fails the way a bug does."""

    def _build(self, clients: KubeClients) -> Parts:
        parts = super()._build(clients)

        async def broken() -> None:
            await asyncio.sleep(0.2)
            raise KeyError("no-such-node")

        parts.tasks.append(("broken-feature", broken))
        return parts


async def test_a_bug_in_a_task_logs_its_cause_not_the_task_group(sim: Sim, log_output: io.StringIO) -> None:
    add_gpu_node(sim, "n1", GB200)
    settings = load_settings({"CLUSTER_NAME": "t", "KUBECONFIG": str(sim.kubeconfig), "SERVER_PORT": "0"})
    app = BrokenFeatureApp(settings, exporters=[MemoryExporter()])
    assert await asyncio.wait_for(app.run(), 20) == 1
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    [crash] = [line for line in lines if line["event"] == "gpuid crashed"]
    assert (crash["error_type"], crash["error"]) == ("KeyError", "'no-such-node'")
    assert "test_crash_lines.py" in crash["traceback"]
    assert not any("TaskGroup" in str(line.get("error")) for line in lines)


async def test_the_event_loop_s_last_resort_logs_json(log_output: io.StringIO) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(loop_exception_handler)
    try:

        def callback() -> None:
            raise RuntimeError("a callback failed")

        loop.call_soon(callback)
        await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(previous)
    [line] = [json.loads(text) for text in log_output.getvalue().splitlines()]
    assert line["event"] == "unexpected error in the event loop"
    assert (line["level"], line["error_type"], line["error"]) == (
        "error",
        "RuntimeError",
        "a callback failed",
    )
    assert "callback" in line["traceback"]


def test_library_log_records_with_a_traceback_keep_the_error(log_output: io.StringIO) -> None:
    try:
        raise ValueError("bad frame")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    [line] = [json.loads(text) for text in log_output.getvalue().splitlines()]
    assert (line["event"], line["logger"], line["level"]) == (
        "Error handling request",
        "aiohttp.server",
        "error",
    )
    assert (line["error_type"], line["error"]) == ("ValueError", "bad frame")
