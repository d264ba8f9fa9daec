"""Settings of delivery and the exporters: defaults, validation naming the variable, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuid.config import load_settings
from gpuid.delivery.settings import DeliverySettings
from gpuid.errors import ConfigError
from gpuid.exporters import REGISTRY, build_exporters
from gpuid.exporters.postgres.settings import PostgresSettings
from gpuid.exporters.s3client import S3Settings
from gpuid.options import OPTIONS, Env

BASE = {"CLUSTER_NAME": "t"}


def test_every_export_option_is_documented_in_the_export_group() -> None:
    export = [o for o in OPTIONS if o.group == "export"]
    names = {o.env for o in export}
    assert {"EXPORT_BATCH_SIZE", "SPOOL_DIR", "S3_BUCKET", "POSTGRES_DSN", "HTTP_AUTH_TOKEN"} <= names
    assert all(o.help for o in export)


def test_delivery_defaults_and_validation() -> None:
    assert DeliverySettings.from_env(Env({})) == DeliverySettings()
    got = DeliverySettings.from_env(Env({"SPOOL_DIR": "/var/spool/gpuid", "EXPORT_FLUSH_INTERVAL": "250ms"}))
    assert got.spool_dir == Path("/var/spool/gpuid")
    assert got.flush_interval == 0.25
    with pytest.raises(ConfigError, match="EXPORT_QUEUE_SIZE"):
        DeliverySettings.from_env(Env({"EXPORT_BATCH_SIZE": "100", "EXPORT_QUEUE_SIZE": "10"}))
    with pytest.raises(ConfigError, match="EXPORT_BATCH_SIZE"):
        DeliverySettings.from_env(Env({"EXPORT_BATCH_SIZE": "many"}))


def test_s3_settings() -> None:
    with pytest.raises(ConfigError, match="S3_BUCKET is required"):
        S3Settings.from_env(Env({}))
    got = S3Settings.from_env(Env({"S3_BUCKET": "inv", "S3_PREFIX": "/a/b/", "S3_FORMAT": "CSV"}))
    assert (got.prefix, got.format, got.region, got.endpoint_url) == ("a/b", "csv", None, None)
    for name, value in [
        ("S3_FORMAT", "parquet"),
        ("S3_COMPRESS", "zstd"),
        ("S3_SSE", "aes"),
        ("S3_ENDPOINT_URL", "x"),
    ]:
        with pytest.raises(ConfigError, match=name):
            S3Settings.from_env(Env({"S3_BUCKET": "inv", name: value}))


def test_postgres_settings_sslmode_identifiers_and_secrets() -> None:
    remote = PostgresSettings.from_env(Env({"POSTGRES_HOST": "db.example", "POSTGRES_PASSWORD": "pw-xyz-1"}))
    assert remote.sslmode == "require"
    assert "pw-xyz-1" not in repr(remote)
    assert remote.target == "gpuid@db.example:5432/gpuid"
    assert PostgresSettings.from_env(Env({"POSTGRES_HOST": "127.0.0.1"})).sslmode == "prefer"
    dsn = PostgresSettings.from_env(Env({"POSTGRES_DSN": "postgresql://u:pw-abc-2@h:6432/inv"}))
    assert dsn.sslmode is None
    assert "pw-abc-2" not in repr(dsn)
    assert dsn.target == "u@h:6432/inv"
    assert dsn.secrets() == ("pw-abc-2",)
    with pytest.raises(ConfigError, match="POSTGRES_READINGS_TABLE"):
        PostgresSettings.from_env(Env({"POSTGRES_READINGS_TABLE": 'x"; DROP TABLE y; --'}))
    with pytest.raises(ConfigError, match="POSTGRES_SCHEMA"):
        PostgresSettings.from_env(Env({"POSTGRES_SCHEMA": "Public"}))
    with pytest.raises(ConfigError, match="POSTGRES_DSN") as err:
        PostgresSettings.from_env(Env({"POSTGRES_DSN": "mysql://u:pw-def-3@h/x"}))
    assert "pw-def-3" not in str(err.value)
    with pytest.raises(ConfigError, match="POSTGRES_SSLMODE"):
        PostgresSettings.from_env(Env({"POSTGRES_SSLMODE": "maybe"}))


def test_registry_builds_the_fan_out() -> None:
    assert {"stdout", "s3", "postgres", "http"} <= set(REGISTRY)
    env = BASE | {
        "EXPORTER_TYPE": "stdout,postgres,s3,http",
        "S3_BUCKET": "bkt",
        "HTTP_ENDPOINT": "http://x/",
    }
    built = build_exporters(load_settings(env).exporters)
    assert [e.name for e in built] == ["stdout", "postgres", "s3", "http"]
    with pytest.raises(ConfigError, match="S3_BUCKET"):
        build_exporters(load_settings(BASE | {"EXPORTER_TYPE": "s3"}).exporters)
