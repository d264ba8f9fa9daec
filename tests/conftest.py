"""Suite-wide fixtures: the simulated cluster over real HTTP, real backends, JSON logs, leak checks.

Helpers (the app under test, records, services, waiting) live in ``tests/support``,
which the benchmarks import too; this file only turns them into fixtures. Every
simulated cluster enforces the exec admission policy gpuid ships, evaluated with
CEL: a test in which the policy denied one of gpuid's own execs fails, unless it
is marked ``exec_policy_denials``; the session's summary counts what was checked.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gpuid.log import configure_logging
from gpuid.sim import SimApiServer, SimCluster
from tests.support.app import Sim
from tests.support.execpolicy import ExecTally, shipped_policy
from tests.support.services import PG_PASSWORD, PostgresServer, S3Server, postgres_server, s3_server


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    """Every test must leave no task running behind it."""
    yield
    me = asyncio.current_task()
    for _ in range(50):
        left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not left:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"tasks left running: {[t.get_name() for t in left]}")


@pytest.fixture(autouse=True)
def _json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug", "json")


EXEC_TALLY = pytest.StashKey[ExecTally]()


@pytest.fixture(scope="session")
def exec_tally(pytestconfig: pytest.Config) -> ExecTally:
    """gpuid's execs checked against the shipped exec policy, over the whole session."""
    return pytestconfig.stash.setdefault(EXEC_TALLY, ExecTally())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    tally = config.stash.get(EXEC_TALLY, None)
    if tally is not None and tally.tests:
        terminalreporter.write_line(tally.summary())


@pytest.fixture
async def sim(tmp_path: Path, request: pytest.FixtureRequest, exec_tally: ExecTally) -> AsyncIterator[Sim]:
    """The simulated cluster, authenticating gpuid as its ServiceAccount and enforcing the exec policy."""
    cluster = SimCluster()
    server = SimApiServer(cluster, bookmark_interval=0.2, admission=shipped_policy().admit)
    async with server:
        yield Sim(cluster, server, server.write_kubeconfig(tmp_path / "kubeconfig"))
    expected = request.node.get_closest_marker("exec_policy_denials") is not None
    exec_tally.check(request.node.nodeid, server.connect_log, denials_expected=expected)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
def pg_env(pg_server: PostgresServer) -> dict[str, str]:
    """Variables for a postgres exporter writing to a fresh schema of the shared server."""
    return {
        "CLUSTER_NAME": "test",
        "EXPORTER_TYPE": "postgres",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(pg_server.port),
        "POSTGRES_DB": "gpuid",
        "POSTGRES_USER": "gpuid",
        "POSTGRES_PASSWORD": PG_PASSWORD,
        "POSTGRES_SCHEMA": f"t_{uuid.uuid4().hex[:10]}",
        "POSTGRES_AUTO_MIGRATE": "true",
        "POSTGRES_TIMEOUT": "5s",
    }


@pytest.fixture
def s3_env(s3_server: S3Server) -> dict[str, str]:
    return {
        "CLUSTER_NAME": "test",
        "EXPORTER_TYPE": "s3",
        "S3_BUCKET": f"gpuid-{uuid.uuid4().hex[:12]}",
        "S3_ENDPOINT_URL": s3_server.endpoint,
        "S3_FORCE_PATH_STYLE": "true",
        "S3_REGION": "us-east-1",
        "S3_TIMEOUT": "5s",
    }


@pytest.fixture
def log_output() -> io.StringIO:
    """Every log line of the test, as JSON, in a buffer the test reads."""
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    return buffer
