"""``gpuid inventory`` against a database filled by the postgres exporter."""

from __future__ import annotations

import argparse
import io
import json
import socket
from datetime import UTC, datetime, timedelta

import pytest

from gpuid.cli import main
from gpuid.config import inventory_settings, load_settings
from gpuid.exporters.postgres.exporter import PostgresExporter
from gpuid.inventory import add_inventory_parser, run_inventory
from tests.support.records import reading


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpuid")
    add_inventory_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["inventory", *argv])


def ago(hours: float) -> str:
    at = datetime.now(UTC) - timedelta(hours=hours)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
async def filled(pg_env: dict[str, str]) -> dict[str, str]:
    """GPU 1 moved node-a -> node-b an hour ago; GPU 2 sits in node-a; GPU 3 went quiet two days ago."""
    exporter = PostgresExporter.from_settings(load_settings(pg_env).exporters)
    await exporter.open()
    try:
        await exporter.export(
            [
                reading(1, node="node-a", machine="i-a", observed_at=ago(5)),
                reading(2, node="node-a", machine="i-a", observed_at=ago(1)),
                reading(3, node="node-c", machine="i-c", observed_at=ago(48)),
            ]
        )
        await exporter.export([reading(1, node="node-b", machine="i-b", pod_uid="p2", observed_at=ago(1))])
    finally:
        await exporter.close()
    return pg_env


async def run(env: dict[str, str], *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_inventory(parse(*argv), inventory_settings(env), out=out)
    return code, out.getvalue()


async def test_where_by_serial_and_uuid(filled: dict[str, str]) -> None:
    gpu = reading(1)
    code, text = await run(filled, "where", gpu.gpu_serial)
    assert code == 0
    header, row = text.splitlines()
    assert header.split()[:5] == ["cluster", "gpu_uuid", "gpu_serial", "product_name", "node"]
    assert gpu.gpu_uuid in row
    assert "node-b" in row
    assert "i-b" in row
    code, text = await run(filled, "where", gpu.gpu_uuid, "--json")
    (line,) = text.splitlines()
    got = json.loads(line)
    assert (got["node"], got["machine"], got["moves"]) == ("node-b", "i-b", 1)
    assert got["last_seen"].endswith("Z")


async def test_where_unknown_gpu_exits_1(filled: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, text = await run(filled, "where", "no-such-serial")
    assert code == 1
    assert text == ""
    assert "no GPU with serial or UUID" in capsys.readouterr().err


async def test_moves_node_and_stale(filled: dict[str, str]) -> None:
    code, text = await run(filled, "moves", "--since", "2h", "--json")
    (move,) = [json.loads(line) for line in text.splitlines()]
    assert (move["from_node"], move["to_node"], move["gpu_uuid"]) == (
        "node-a",
        "node-b",
        reading(1).gpu_uuid,
    )
    code, text = await run(filled, "moves", "--since", "30m", "--json")
    assert (code, text) == (0, "")
    code, text = await run(filled, "node", "node-a", "--json")
    assert [json.loads(line)["gpu_uuid"] for line in text.splitlines()] == [reading(2).gpu_uuid]
    code, text = await run(filled, "stale", "--older-than", "1d", "--json")
    assert [json.loads(line)["gpu_uuid"] for line in text.splitlines()] == [reading(3).gpu_uuid]
    code, text = await run(filled, "stale", "--older-than", "24h", "--cluster", "elsewhere", "--json")
    assert (code, text) == (0, "")


async def test_unreachable_database_is_one_clear_line(
    pg_env: dict[str, str], pg_password: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    code, _ = await run(pg_env | {"POSTGRES_PORT": port}, "where", "x")
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot reach PostgreSQL" in err
    assert pg_password not in err


async def test_missing_schema_says_how_to_fix(
    pg_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = await run(pg_env, "node", "node-a")
    assert code == 1
    assert "POSTGRES_AUTO_MIGRATE" in capsys.readouterr().err


def test_bad_settings_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PORT", "x")
    assert main(["inventory", "node", "n"]) == 2
    assert "POSTGRES_PORT" in capsys.readouterr().err
