"""The stdout exporter when its reader goes away: a lane error, never a dropped record."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import TextIO

import pytest

from gpuid.delivery.delivery import Delivery
from gpuid.errors import ExportError, LaneError
from gpuid.exporters.stdout import StdoutExporter
from gpuid.metrics import Metrics
from tests.support.app import eventually, sample
from tests.support.records import delivering, fast_delivery, reading


class PipeWriter(io.TextIOBase):
    """Text written straight to a file descriptor, as a container's stdout pipe takes it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        os.write(self.fd, text.encode())
        return len(text)


@pytest.fixture
def broken_pipe() -> Iterator[TextIO]:
    """The writing end of a pipe whose reader has gone away (writes fail with EPIPE)."""
    read, write = os.pipe()
    os.close(read)
    try:
        yield PipeWriter(write)
    finally:
        os.close(write)


async def test_a_closed_or_broken_stdout_is_a_lane_error(broken_pipe: TextIO) -> None:
    with pytest.raises(LaneError, match="no reader"):
        await StdoutExporter(broken_pipe).export([reading(1)])
    closed = io.StringIO()
    closed.close()
    with pytest.raises(LaneError, match="closed"):
        await StdoutExporter(closed).export([reading(1)])


async def test_other_write_errors_are_transient() -> None:
    class Full(io.StringIO):
        def write(self, _: str) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(ExportError) as err:
        await StdoutExporter(Full()).export([reading(1)])
    assert type(err.value) is ExportError


async def test_records_wait_while_stdout_has_no_reader(broken_pipe: TextIO) -> None:
    metrics = Metrics()
    delivery = Delivery([StdoutExporter(broken_pipe)], metrics, fast_delivery())
    async with delivering(delivery, grace=0.1):
        delivery.submit([reading(n) for n in range(3)])
        await eventually(lambda: sample(metrics, "gpuid_export_failure_total", exporter="stdout") >= 2)
        assert sample(metrics, "gpuid_exporter_up", exporter="stdout") == 0
        assert delivery.waiting() == {"stdout": 3}
