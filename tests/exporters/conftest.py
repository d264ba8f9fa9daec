"""Real backends for the exporter tests: a throwaway PostgreSQL and moto's S3 server.

Both are started once per session and shared; each test gets its own schema
or bucket. A service that cannot start FAILS the tests that need it (never a
skip): ``make test`` installs the PostgreSQL server through .ci/system-deps.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import io
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpuid.delivery import Delivery
from gpuid.exporters.settings import DeliverySettings
from gpuid.log import configure_logging
from gpuid.records import GPUReading, MigDevice

PG_PASSWORD = "pg-Secret-7f3a"  # the tests assert this never reaches a log line


@pytest.fixture(autouse=True)
def _json_logs() -> io.StringIO:
    """Render every log line as JSON into a buffer that stays open for the whole test.

    Overrides the suite-wide fixture of the same name (whose capsys stream is
    closed again by the time the test body runs under pytest 9); tests that
    check what reaches the logs take ``log_output``.
    """
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    return buffer


@pytest.fixture
def log_output(_json_logs: io.StringIO) -> io.StringIO:
    return _json_logs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in a temp dir, run as the postgres user when we are root."""

    bindir: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            pytest.fail(f"{' '.join(args[:2])} failed: {done.stderr or done.stdout}\n{log[-2000:]}")

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        # Superuser without password for the tests' own checks; the app's user must authenticate.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "server.log"), "-w", "start"
        )

    def ensure_started(self) -> None:
        """Used in ``finally`` by tests that stop the shared server."""
        if not (self.data / "postmaster.pid").exists():
            self.start()

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def psql(self, sql: str) -> None:
        self._run(
            "psql",
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        )

    def dsn(self, user: str = "postgres", db: str = "gpuid") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"


def find_postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail(
            "PostgreSQL server binaries missing (/usr/lib/postgresql/*/bin): run `bash .ci/system-deps`"
        )
    return Path(found[-1]).parent


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="gpuid-pg-"))
    os.chmod(root, 0o755)
    server = PostgresServer(find_postgres_bin(), root / "pg", free_port())
    server.init()
    server.start()
    server.psql(f"CREATE ROLE gpuid LOGIN PASSWORD '{PG_PASSWORD}'")
    server.psql("CREATE DATABASE gpuid OWNER gpuid")
    try:
        yield server
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(server.bindir / "pg_ctl"),
                "-D",
                str(server.data),
                "-m",
                "immediate",
                "stop",
            ]
            if os.geteuid() == 0
            else [str(server.bindir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


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


@dataclass
class S3Server:
    endpoint: str
    port: int
    server: Any

    running: bool = True

    def stop(self) -> None:
        self.server.stop()
        self.running = False

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port)
        self.server.start()
        self.running = True

    def ensure_started(self) -> None:
        if not self.running:
            self.start()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        try:
            server.start()
            host, port = server.get_host_and_port()
        except Exception as e:
            pytest.fail(f"moto S3 server did not start: {e}")
        s3 = S3Server(f"http://{host}:{port}", port, server)
        try:
            yield s3
        finally:
            s3.stop()


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


def reading(
    n: int = 0,
    *,
    node: str = "node-a",
    machine: str | None = "i-0aaa",
    pod_uid: str = "pod-1",
    observed_at: str = "2025-01-02T03:04:05.000Z",
    cluster: str = "test",
) -> GPUReading:
    """A fully populated record; ``n`` makes the GPU unique."""
    return GPUReading(
        cluster=cluster,
        node=node,
        machine=machine,
        source=f"gpu-operator/nvidia-device-plugin-{node}",
        pod_uid=pod_uid,
        gpu_uuid=f"GPU-{n:08d}-aaaa-bbbb-cccc-000000000000",
        gpu_serial=f"16520{n:08d}",
        chassis_serial="1821223000123",
        module_id=n % 8 + 1,
        gpu_index=n % 8,
        pci_bus_id=f"00000000:{n % 256:02X}:00.0",
        product_name="NVIDIA H100 80GB HBM3",
        product_architecture="Hopper",
        board_part_number="692-2G520-0200-000",
        vbios_version="96.00.74.00.01",
        driver_version="550.54.15",
        cuda_version="12.4",
        mig_mode="Enabled" if n % 2 else "Disabled",
        mig_devices=(MigDevice("MIG-1234", "1g.10gb", 1, 0),) if n % 2 else (),
        observed_at=observed_at,
    )


@pytest.fixture
def make_reading() -> Any:
    return reading


@pytest.fixture
def pg_password() -> str:
    return PG_PASSWORD


@contextlib.asynccontextmanager
async def _running(delivery: Delivery, grace: float = 5.0) -> AsyncIterator[Delivery]:
    """Run ``delivery`` for the block, then shut it down the way the app does."""
    task = asyncio.create_task(delivery.run(), name="test-delivery")
    try:
        yield delivery
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await delivery.drain(grace)


async def _eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll ``check`` until it holds; fail with a clear message after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


@pytest.fixture
def running() -> Any:
    return _running


@pytest.fixture
def eventually() -> Any:
    return _eventually


def fast_delivery(**overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {"batch_size": 50, "flush_interval": 0.02, "retry_max_backoff": 0.1}
    return DeliverySettings(**(values | overrides))


@pytest.fixture
def delivery_settings() -> Any:
    """``DeliverySettings`` with test-speed batching and retries; keyword overrides."""
    return fast_delivery
