"""Bug-report and driver-pod settings: defaults, validation, errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuid.bugreport.settings import BugReportSettings, read_vm_id
from gpuid.config import load_settings
from gpuid.errors import ConfigError
from gpuid.options import Env
from gpuid.scan.settings import DriverSettings


def settings(**env: str) -> BugReportSettings:
    return BugReportSettings.from_env(Env(env), env.get("NODE_NAME", ""), Path("/nonexistent"))


def test_defaults_are_off_and_match_the_documented_values() -> None:
    assert settings() == BugReportSettings()
    on = settings(BUG_REPORT_ENABLED="true", BUG_REPORT_DIR="/var/lib/gpuid")
    assert (on.enabled, on.directory, on.s3, on.api) == (True, Path("/var/lib/gpuid"), None, None)
    assert (on.keep, on.timeout, on.on_failure, on.min_interval) == (5, 300.0, False, 3600.0)
    assert (on.interval, on.concurrency) == (0.0, 2)
    driver = load_settings({"CLUSTER_NAME": "c", "NAMESPACE": "nvidia"}).drivers
    assert driver == DriverSettings(namespace="nvidia")  # DRIVER_NAMESPACE defaults to NAMESPACE


def test_s3_destination_reuses_the_exporter_settings() -> None:
    on = settings(BUG_REPORT_ENABLED="true", BUG_REPORT_S3="true", S3_BUCKET="reports", S3_PREFIX="p/")
    assert on.s3 is not None
    assert (on.s3.bucket, on.s3.prefix, on.directory) == ("reports", "p", None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BUG_REPORT_ENABLED": "true"}, "needs a destination: set BUG_REPORT_DIR"),
        ({"BUG_REPORT_ENABLED": "true", "BUG_REPORT_S3": "true"}, "S3_BUCKET is required"),
        ({"BUG_REPORT_ENABLED": "yes please"}, "BUG_REPORT_ENABLED='yes please' is invalid"),
        (
            {"BUG_REPORT_ENABLED": "true", "BUG_REPORT_DIR": "/d", "MAX_LOGS_TO_KEEP": "0"},
            "MAX_LOGS_TO_KEEP=0",
        ),
        (
            {"BUG_REPORT_ENABLED": "true", "BUG_REPORT_DIR": "/d", "BUG_REPORT_TIMEOUT": "0"},
            "BUG_REPORT_TIMEOUT",
        ),
        (
            {"BUG_REPORT_ENABLED": "true", "BUG_REPORT_DIR": "/d", "BUG_REPORT_INTERVAL": "soon"},
            "BUG_REPORT_INTERVAL",
        ),
        (
            {"BUG_REPORT_ENABLED": "true", "BUG_REPORT_DIR": "/d", "BUG_REPORT_CONCURRENCY": "0"},
            "CONCURRENCY=0",
        ),
        ({"API_BASE_URL": "http://api", "NODE_NAME": "n", "VM_ID": "v"}, "BUG_REPORT_ENABLED is not true"),
        ({"BUG_REPORT_ENABLED": "true", "API_BASE_URL": "ftp://api"}, "API_BASE_URL='ftp://api' is invalid"),
        ({"BUG_REPORT_ENABLED": "true", "API_BASE_URL": "http://api"}, "set NODE_NAME"),
        ({"BUG_REPORT_ENABLED": "true", "API_BASE_URL": "http://api", "NODE_NAME": "n"}, "VM_ID is not set"),
    ],
)
def test_bad_settings_stop_gpuid_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        settings(**env)


def test_scan_source_and_selector_are_validated() -> None:
    with pytest.raises(ConfigError, match="SCAN_SOURCE='gpu' is invalid: choose one of device-plugin"):
        load_settings({"CLUSTER_NAME": "c", "SCAN_SOURCE": "gpu"})
    with pytest.raises(ConfigError, match="DRIVER_LABEL_SELECTOR must not be empty"):
        load_settings({"CLUSTER_NAME": "c", "DRIVER_LABEL_SELECTOR": " "})


def test_vm_id_falls_back_to_the_dmi_product_uuid(tmp_path: Path) -> None:
    dmi = tmp_path / "product_uuid"
    dmi.write_text("4C4C4544-0042-3010-8052-B4C04F4E3432\n")
    assert read_vm_id(dmi) == "4c4c4544-0042-3010-8052-b4c04f4e3432"
    env = Env({"BUG_REPORT_ENABLED": "true", "API_BASE_URL": "https://x/"})
    api = BugReportSettings.from_env(env, "n", dmi).api
    assert api is not None
    assert (api.base_url, api.vm_id, api.poll_interval) == ("https://x", read_vm_id(dmi), 60.0)
    dmi.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        read_vm_id(dmi)
