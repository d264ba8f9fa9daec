"""Real services on loopback for the tests: a throwaway PostgreSQL, moto's S3 server, stand-in peers.

A service that cannot start FAILS the tests that need it (never a skip):
``make test`` installs the PostgreSQL server through .ci/system-deps.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

PG_PASSWORD = "pg-Secret-7f3a"  # the tests assert this never reaches a log line
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 on a free port (a stand-in peer for a test); yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


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


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL with a ``gpuid`` role (password ``PG_PASSWORD``) and database, removed after."""
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
        stop = [str(server.bindir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"]
        if os.geteuid() == 0:
            stop = ["runuser", "-u", "postgres", "--", *stop]
        subprocess.run(stop, capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


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


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port, with test credentials in the environment."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_TEST_ENV.items():
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
