"""Exporter tests: every log line rendered as JSON into a buffer the test can read.

The real backends (a throwaway PostgreSQL, moto's S3 server) are session
fixtures of the suite (tests/conftest.py); helpers come from tests/support.
"""

from __future__ import annotations

import io

import pytest

from gpuid.log import configure_logging
from tests.support.services import PG_PASSWORD


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


@pytest.fixture
def pg_password() -> str:
    return PG_PASSWORD
