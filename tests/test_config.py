"""Settings: defaults, validation with one clear message, and the CLI's exit code 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpuid.cli import build_parser, flag_values, main
from gpuid.config import exporter_names, load_settings
from gpuid.errors import ConfigError
from gpuid.options import OPTIONS, Env, Option, parse_duration


def test_defaults_match_the_documented_ones() -> None:
    s = load_settings({"CLUSTER_NAME": "c1"})
    assert s.cluster_name == "c1"
    assert s.watch.namespace == "gpu-operator"
    assert s.watch.label_selector == "app=nvidia-device-plugin-daemonset"
    assert s.watch.container == "nvidia-device-plugin"
    assert s.watch.node_name == ""
    assert s.exporters.names == ("stdout",)
    assert s.scan.workers == 64
    assert s.scan.timeout == 30.0
    assert s.scan.max_output_bytes == 4 * 1024 * 1024
    assert s.server_port == 8080
    assert (s.log_level, s.log_format) == ("info", "auto")
    assert (s.kube.kubeconfig, s.kube.proxy_from_env) == ("", False)


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
        ({"CLUSTER_NAME": "c", "TIMEOUT": "0s"}, "TIMEOUT='0s' is invalid: must be between 1s and 1h"),
        ({"CLUSTER_NAME": "c", "LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is invalid"),
        ({"CLUSTER_NAME": "c", "SERVER_PORT": "70000"}, "SERVER_PORT=70000 is invalid"),
        ({"CLUSTER_NAME": "c", "EXPORTER_TYPE": "memory"}, "unknown exporter 'memory'"),
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
    assert exporter_names(Env(env)) == exporters


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


def test_exporters_are_the_union_of_exporter_type_and_the_flags() -> None:
    base = {"CLUSTER_NAME": "c", "S3_BUCKET": "bkt", "POSTGRES_HOST": "db"}
    assert load_settings(base).exporters.names == ("stdout",)
    assert load_settings(base | {"EXPORTER_S3": "true"}).exporters.names == ("s3",)
    flags = {"EXPORTER_S3": "true", "EXPORTER_HTTP": "false"}
    both = load_settings(base | {"EXPORTER_TYPE": "postgres"} | flags)
    assert both.exporters.names == ("postgres", "s3")
    same = load_settings(base | {"EXPORTER_TYPE": "s3,stdout", "EXPORTER_S3": "true"})
    assert same.exporters.names == ("s3", "stdout")
    with pytest.raises(ConfigError, match="EXPORTER_POSTGRES='maybe' is invalid"):
        load_settings(base | {"EXPORTER_POSTGRES": "maybe"})


def test_the_test_double_is_not_an_exporter_users_can_select(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cluster-name", "c", "--exporter-type", "memory"]) == 2
    assert "unknown exporter 'memory'" in capsys.readouterr().err


def test_the_shipped_placeholder_cluster_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="CLUSTER_NAME='change-me' is the deployment's placeholder"):
        load_settings({"CLUSTER_NAME": "change-me"})


def test_options_are_flags_of_each_command_and_booleans_take_no_value() -> None:
    args = build_parser().parse_args(["run", "--workers", "3", "--no-node-labels", "--leader-election"])
    assert flag_values(args) == {"WORKERS": "3", "NODE_LABELS": "false", "LEADER_ELECTION": "true"}
    before = build_parser().parse_args(["--workers", "5", "run"])
    assert flag_values(before) == {"WORKERS": "5"}  # a flag before the command is not reset by it
    assert flag_values(build_parser().parse_args([])) == {}


def test_each_command_documents_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--workers VALUE" in out
    assert "--node-labels, --no-node-labels" in out or "--node-labels | --no-node-labels" in out


def test_the_output_cap_cannot_exceed_what_the_parser_reads() -> None:
    with pytest.raises(ConfigError, match="MAX_OUTPUT_BYTES=4194305 is invalid"):
        load_settings({"CLUSTER_NAME": "c", "MAX_OUTPUT_BYTES": "4194305"})


# -- bounds of every numeric setting -----------------------------------------------------------
EVERYTHING = {  # selects every settings group, so every option is parsed
    "CLUSTER_NAME": "c",
    "EXPORTER_TYPE": "stdout,s3,postgres,http",
    "S3_BUCKET": "bkt",
    "HTTP_ENDPOINT": "http://collector/x",
    "BUG_REPORT_ENABLED": "true",
    "BUG_REPORT_DIR": "/d",
    "API_BASE_URL": "http://api",
    "NODE_NAME": "n",
    "VM_ID": "v",
    "LEADER_ELECTION": "true",
}


def is_number(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


NUMERIC = [o for o in OPTIONS if is_number(o.default)]
HOSTILE = ["nan", "inf", "-inf", "-1", "1" + "0" * 21, "1e3", "١٢", "+5", "1_0", "0x10", ""]


def test_every_numeric_option_is_found_and_parsed() -> None:
    assert len(NUMERIC) >= 25  # a default that stops looking like a number would drop its row silently
    load_settings(EVERYTHING)  # the defaults themselves are within every bound


@pytest.mark.parametrize("option", NUMERIC, ids=lambda o: o.env)
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_every_numeric_option_rejects_hostile_values_naming_itself(option: Option, value: str) -> None:
    if value == "" and option.env == "SERVER_PORT":
        value = "-0"
    with pytest.raises(ConfigError) as info:
        load_settings(EVERYTHING | {option.env: value})
    message = str(info.value)
    assert message.startswith(f"{option.env}=")
    assert "\n" not in message


DOCS = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
BOUNDS = {
    env: (low, high)
    for env, low, high in re.findall(
        r"^\| `([A-Z0-9_]+)` \| ([0-9.a-z]+) \| ([0-9.a-z]+) \|", DOCS, flags=re.M
    )
}


def test_every_numeric_option_has_documented_bounds() -> None:
    assert sorted(BOUNDS) == sorted(o.env for o in NUMERIC)


def bound_error(env: str, value: str) -> str:
    """The bounds error ``value`` earns ``env`` ("" when none: rules between settings may still object)."""
    try:
        load_settings(EVERYTHING | {env: value})
    except ConfigError as e:
        return str(e) if str(e).startswith(f"{env}=") and "must be between" in str(e) else ""
    return ""


@pytest.mark.parametrize("env", sorted(BOUNDS))
def test_documented_bounds_are_the_real_ones(env: str) -> None:
    low, high = BOUNDS[env]
    integer = low.isdigit() and high.isdigit()
    assert bound_error(env, low) == ""
    assert bound_error(env, high) == ""
    above = str(int(high) + 1) if integer else repr(parse_duration(high) + 0.001)
    assert bound_error(env, above)
    below = (int(low) - 1) if integer else parse_duration(low) - 0.001
    if below >= 0:
        assert bound_error(env, str(below))


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("postgresql://gpuid:pw-S3cr3t@db:54x/gpuid", "invalid literal for int"),
        ("postgresql://gpuid:pw-S3cr3t@db:99999/gpuid", "port 99999 of db is not between 1 and 65535"),
        ("postgresql://gpuid:pw-S3cr3t@db:0/gpuid", "port 0 of db"),
        ("postgresql://gpuid:pw-S3cr3t@[::1/gpuid", "Invalid IPv6 URL"),
        ("postgresql://gpuid@db/gpuid?password=pw-S3cr3t&sslmode", "bad query field"),
        ("postgresql://gpuid:pw-S3cr3t@db/gpuid?sslmode=sometimes", "sslmode"),
        ("mysql://gpuid:pw-S3cr3t@db/gpuid", "must start with postgresql://"),
    ],
)
def test_a_bad_postgres_dsn_is_one_line_without_the_password(dsn: str, message: str) -> None:
    env = {"CLUSTER_NAME": "c", "EXPORTER_TYPE": "postgres", "POSTGRES_DSN": dsn}
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_settings(env)
    text = str(info.value)
    assert text.startswith("POSTGRES_DSN is invalid: ")
    assert "S3cr3t" not in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("dsn", "target"),
    [
        ("postgresql://gpuid:pw-S3cr3t@h1:5432,h2:5433/inv", "gpuid@h1:5432,h2:5433/inv"),
        ("postgresql://gpuid:pw@[2001:db8::1]:6432/inv?sslmode=disable", "gpuid@[2001:db8::1]:6432/inv"),
        ("postgres://gpuid@/inv?host=/run/postgresql", "gpuid@/run/postgresql/.s.PGSQL.5432/inv"),
    ],
)
def test_a_good_postgres_dsn_is_parsed_at_start_up_and_safe_to_log(dsn: str, target: str) -> None:
    env = {"CLUSTER_NAME": "c", "EXPORTER_TYPE": "postgres", "POSTGRES_DSN": dsn}
    settings = load_settings(env).exporters.postgres
    assert settings is not None
    assert settings.target == target
    assert "pw" not in settings.target
