"""Settings: defaults, validation with one clear message, and the CLI's exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpuid.cli import main
from gpuid.config import load_settings, parse_duration
from gpuid.errors import ConfigError
from gpuid.options import OPTIONS


def test_defaults_match_the_documented_ones() -> None:
    s = load_settings({"CLUSTER_NAME": "c1"})
    assert s.cluster_name == "c1"
    assert s.watch.namespace == "gpu-operator"
    assert s.watch.label_selector == "app=nvidia-device-plugin-daemonset"
    assert s.watch.container == "nvidia-device-plugin"
    assert s.watch.node_name == ""
    assert s.exporters == ("stdout",)
    assert s.scan.workers == 16
    assert s.scan.timeout == 30.0
    assert s.scan.max_output_bytes == 32 * 1024 * 1024
    assert s.server_port == 8080
    assert (s.log_level, s.log_format) == ("info", "auto")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("12", 12.0),
        ("2.5", 2.5),
    ],
)
def test_go_style_and_plain_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "s30", "1h-2m"])
def test_bad_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "CLUSTER_NAME is required"),
        ({"CLUSTER_NAME": "c", "WORKERS": "0"}, "WORKERS=0 is invalid"),
        ({"CLUSTER_NAME": "c", "WORKERS": "many"}, "WORKERS='many' is invalid"),
        ({"CLUSTER_NAME": "c", "TIMEOUT": "soon"}, "TIMEOUT='soon' is invalid"),
        ({"CLUSTER_NAME": "c", "TIMEOUT": "0s"}, "TIMEOUT must be a positive duration"),
        ({"CLUSTER_NAME": "c", "LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is invalid"),
        ({"CLUSTER_NAME": "c", "SERVER_PORT": "70000"}, "SERVER_PORT=70000 is invalid"),
        ({"CLUSTER_NAME": "c", "EXPORTER_TYPE": " , "}, "EXPORTER_TYPE must name"),
    ],
)
def test_invalid_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(env)


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, ("stdout",)),
        ({"EXPORTER_TYPE": ""}, ("stdout",)),
        ({"EXPORTER_S3": "true"}, ("s3",)),
        ({"EXPORTER_S3": "true", "EXPORTER_POSTGRES": "true"}, ("s3", "postgres")),
        ({"EXPORTER_STDOUT": "true", "EXPORTER_HTTP": "1", "EXPORTER_S3": "false"}, ("stdout", "http")),
        ({"EXPORTER_TYPE": "postgres", "EXPORTER_S3": "true"}, ("postgres", "s3")),
        ({"EXPORTER_TYPE": "s3,stdout", "EXPORTER_S3": "true", "EXPORTER_STDOUT": "yes"}, ("s3", "stdout")),
        ({"EXPORTER_TYPE": "http", "EXPORTER_HTTP": "false"}, ("http",)),
    ],
)
def test_exporters_are_exporter_type_joined_with_the_flags(
    env: dict[str, str], exporters: tuple[str, ...]
) -> None:
    """Components each set their own EXPORTER_<NAME> flag, so any set of them composes; nothing = stdout."""
    assert load_settings({"CLUSTER_NAME": "c", **env}).exporters == exporters


def test_an_exporter_flag_that_is_not_a_boolean_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="EXPORTER_S3='s3' is invalid: not a boolean"):
        load_settings({"CLUSTER_NAME": "c", "EXPORTER_S3": "s3"})


def test_cli_flag_overrides_environment_and_bad_config_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLUSTER_NAME", "from-env")
    monkeypatch.setenv("WORKERS", "4")
    assert main(["--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err
    assert "WORKERS=0 is invalid" in err


def test_unknown_exporter_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLUSTER_NAME", "c")
    assert main(["--exporter-type", "carrier-pigeon"]) == 2
    assert "unknown exporter 'carrier-pigeon'" in capsys.readouterr().err


def test_help_documents_every_variable_with_its_default() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gpuid", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "1000"},  # no wrapping inside a default value
    ).stdout
    flat = " ".join(out.split())
    for opt in OPTIONS:
        assert opt.flag in out
        assert f"env {opt.env};" in flat
        if opt.default:
            assert f"default: {opt.default!r}" in flat
