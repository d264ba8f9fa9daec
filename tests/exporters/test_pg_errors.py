"""What each PostgreSQL failure costs: exactly the bad records, a retry, or the lane."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
import pytest

from gpuid.config import load_settings
from gpuid.errors import ExportError, LaneError, RecordError
from gpuid.exporters.postgres.check import classify
from gpuid.exporters.postgres.exporter import PostgresExporter
from gpuid.exporters.postgres.settings import PostgresSettings
from gpuid.records import MigDevice
from tests.support.records import reading


async def opened(env: dict[str, str]) -> PostgresExporter:
    exporter = PostgresExporter.from_settings(load_settings(env).exporters)
    await exporter.open()
    return exporter


async def stored(pg_server: Any, env: dict[str, str]) -> list[str]:
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        rows = await conn.fetch(f"SELECT gpu_uuid FROM {env['POSTGRES_SCHEMA']}.gpu_readings ORDER BY 1")
    finally:
        await conn.close()
    return [r["gpu_uuid"] for r in rows]


async def test_values_postgres_refuses_cost_exactly_their_records(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    good = [reading(n) for n in range(8)]
    bad = {
        1: dataclasses.replace(good[1], gpu_index=2**31),
        2: dataclasses.replace(good[2], node="node\x00a"),
        3: dataclasses.replace(good[3], product_name="H100\ud800"),
        4: dataclasses.replace(good[4], mig_devices=(MigDevice("MIG-1", "1g\x00", 1, 0),)),
        5: dataclasses.replace(good[5], gpu_uuid="GPU-" + "f" * 3000),
        6: dataclasses.replace(good[6], observed_at="yesterday"),
    }
    batch = [bad.get(i, r) for i, r in enumerate(good)]
    exporter = await opened(pg_env)
    try:
        with pytest.raises(RecordError) as err:
            await exporter.export(batch)
        assert err.value.indexes == (1, 2, 3, 4, 5, 6)
        assert "NUL" in str(err.value)
        assert await stored(pg_server, pg_env) == []  # nothing of the batch, so the rest can be retried
        await exporter.export([r for i, r in enumerate(batch) if i not in err.value.indexes])
    finally:
        await exporter.close()
    assert await stored(pg_server, pg_env) == [good[0].gpu_uuid, good[7].gpu_uuid]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vbios_version": "96\x00"}, "vbios_version"),  # not a facet: the history-only path
        ({"gpu_serial": "a\x00b"}, "gpu_serial"),  # a facet: the path that reads the inventory
        ({"module_id": -(2**31) - 1}, "module_id"),  # refused by gpuid as the COPY streams it: aborted
    ],
)
async def test_a_refusal_on_either_path_names_its_record(
    pg_server: Any, pg_env: dict[str, str], change: dict[str, Any], field: str
) -> None:
    exporter = await opened(pg_env)
    try:
        await exporter.export([reading(n) for n in range(3)])
        batch = [reading(n, pod_uid="p2", observed_at="2025-01-03T00:00:00Z") for n in range(3)]
        batch[1] = dataclasses.replace(batch[1], **change)
        with pytest.raises(RecordError, match=field) as err:
            await exporter.export(batch)
        assert err.value.indexes == (1,)
        await exporter.export(batch[::2])
    finally:
        await exporter.close()
    assert len(await stored(pg_server, pg_env)) == 5


async def test_a_refusal_only_the_server_understands_is_found_by_its_copy_line(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    exporter = await opened(pg_env)
    conn = await asyncpg.connect(pg_server.dsn())
    try:  # a rule of the site's DBA that gpuid knows nothing about
        await conn.execute(
            f"ALTER TABLE {pg_env['POSTGRES_SCHEMA']}.gpu_readings ADD CHECK (node <> 'quarantine')"
        )
        batch = [reading(n) for n in range(5)]
        batch[3] = dataclasses.replace(batch[3], node="quarantine")
        with pytest.raises(RecordError, match="23514") as err:
            await exporter.export(batch)
        assert err.value.indexes == (3,)
    finally:
        await conn.close()
        await exporter.close()


async def test_credentials_database_and_schema_problems_are_lane_errors(
    pg_server: Any, pg_env: dict[str, str], pg_password: str
) -> None:
    cases = {
        "POSTGRES_PASSWORD": ({"POSTGRES_PASSWORD": "Wr0ng-Secret-1"}, "Wr0ng-Secret-1"),
        "POSTGRES_DB": ({"POSTGRES_DB": "no_such_db"}, pg_password),
        "POSTGRES_AUTO_MIGRATE": ({"POSTGRES_AUTO_MIGRATE": "false"}, pg_password),
    }
    for hint, (changes, secret) in cases.items():
        exporter = PostgresExporter.from_settings(load_settings(pg_env | changes).exporters)
        with pytest.raises(LaneError) as err:
            await exporter.open()
        assert hint in str(err.value)
        assert secret not in str(err.value)
        await exporter.close()


async def test_tables_gpuid_may_not_write_are_a_lane_error(pg_server: Any, pg_env: dict[str, str]) -> None:
    owner_env = pg_env | {"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": ""}
    await (await opened(owner_env)).close()  # the tables exist, owned by someone else
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        await conn.execute(f"GRANT USAGE ON SCHEMA {pg_env['POSTGRES_SCHEMA']} TO gpuid")
    finally:
        await conn.close()
    exporter = await opened(pg_env | {"POSTGRES_AUTO_MIGRATE": "false"})
    try:
        with pytest.raises(LaneError, match="42501"):
            await exporter.export([reading(1)])
    finally:
        await exporter.close()


async def test_a_stopped_server_is_transient_and_forgets_what_was_cached(
    pg_server: Any, pg_env: dict[str, str]
) -> None:
    exporter = await opened(pg_env)
    try:
        await exporter.export([reading(n) for n in range(4)])
        assert exporter.cache.epoch is not None
        pg_server.stop()
        try:
            with pytest.raises(ExportError) as err:
                await exporter.export([reading(n, pod_uid="p2") for n in range(4)])
            assert err.value.transient
            assert not isinstance(err.value, RecordError | LaneError)
            assert exporter.cache.epoch is None
        finally:
            pg_server.ensure_started()
        await exporter.export([reading(n, pod_uid="p2") for n in range(4)])
    finally:
        await exporter.close()
    assert len(await stored(pg_server, pg_env)) == 8


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (asyncpg.exceptions.SerializationError("x"), ExportError),
        (asyncpg.exceptions.DeadlockDetectedError("x"), ExportError),
        (asyncpg.exceptions.LockNotAvailableError("x"), ExportError),
        (asyncpg.exceptions.TooManyConnectionsError("x"), ExportError),
        (asyncpg.exceptions.AdminShutdownError("x"), ExportError),
        (asyncpg.exceptions.DiskFullError("x"), ExportError),
        (asyncpg.exceptions.ConnectionDoesNotExistError("x"), ExportError),
        (ConnectionRefusedError(111, "refused"), ExportError),
        (TimeoutError(), ExportError),
        (asyncpg.exceptions.NumericValueOutOfRangeError("x"), RecordError),
        (asyncpg.exceptions.NotNullViolationError("x"), RecordError),
        (asyncpg.exceptions.UntranslatableCharacterError("x"), RecordError),
        (asyncpg.exceptions.InvalidPasswordError("x"), LaneError),
        (asyncpg.exceptions.InvalidCatalogNameError("x"), LaneError),
        (asyncpg.exceptions.UndefinedTableError("x"), LaneError),
        (asyncpg.exceptions.UndefinedColumnError("x"), LaneError),
        (asyncpg.exceptions.InsufficientPrivilegeError("x"), LaneError),
    ],
)
def test_sqlstate_classes(error: BaseException, kind: type[ExportError]) -> None:
    config = PostgresSettings(password="Pa55-in-msg")
    wrapped = classify(type(error)(*error.args, "Pa55-in-msg") if error.args else error, config)
    assert type(wrapped) is kind
    assert wrapped.transient is (kind is ExportError)
    assert "Pa55-in-msg" not in str(wrapped)
