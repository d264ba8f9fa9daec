"""Where gpuid's CPU goes during a sweep, by concern, from py-spy samples of the running process.

``python -m bench.fleet --profile`` records gpuid with py-spy (sampling, so
the process runs at full speed; only samples where it is on the CPU count)
for exactly the sweep, then files each sample under the concern of its
innermost frame that names one: a sample inside ``ssl.py`` called from
aiohttp is TLS (exec transport), one inside ``pyexpat`` under gpuid/smi is
parsing. Generic frames (``json``, ``asyncio``, ``selectors``) decide only
when nothing more specific is on the stack, so ``json.loads`` under the
informer counts as the watch and a bare ``epoll`` wait as the event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

CATEGORIES = ("parse", "exec transport", "event loop + sockets", "records + export + logs", "watch", "other")
RULES: tuple[tuple[str, str], ...] = (  # (path fragment, category), tried on each frame from the leaf up
    ("gpuid/smi/", "parse"),
    ("xml/etree", "parse"),
    ("xml/parsers", "parse"),
    ("gpuid/kube/informer.py", "watch"),
    ("gpuid/kube/objects.py", "watch"),
    ("gpuid/kube/nodes.py", "watch"),
    ("gpuid/kube/", "exec transport"),
    ("aiohttp/", "exec transport"),
    ("kubernetes_asyncio/", "exec transport"),
    ("yarl/", "exec transport"),
    ("multidict/", "exec transport"),
    ("asyncio/sslproto.py", "exec transport"),
    ("ssl.py:", "exec transport"),  # the stdlib ssl module (py-spy prints paths relative to lib/)
    ("gpuid/records.py", "records + export + logs"),
    ("gpuid/exporters/", "records + export + logs"),
    ("gpuid/delivery/", "records + export + logs"),
    ("gpuid/scan/", "records + export + logs"),
    ("gpuid/log.py", "records + export + logs"),
    ("gpuid/metrics.py", "records + export + logs"),
    ("structlog/", "records + export + logs"),
    ("prometheus_client/", "records + export + logs"),
)
GENERIC: tuple[tuple[str, str], ...] = (
    ("json/", "records + export + logs"),
    ("logging/", "records + export + logs"),
    ("asyncio/", "event loop + sockets"),
    ("selectors.py", "event loop + sockets"),
)


def _first(frames: list[str], rules: tuple[tuple[str, str], ...]) -> str | None:
    for frame in frames:
        where = frame.rsplit("(", 1)[-1]
        for fragment, name in rules:
            if fragment in where:
                return name
    return None


def category(stack: str) -> str:
    """The concern of one collapsed stack (``frame;frame;...``, outermost first)."""
    frames = stack.split(";")[::-1]
    return _first(frames, RULES) or _first(frames, GENERIC) or "other"


def split(path: str) -> Counter[str]:
    """Samples per concern from py-spy's ``--format raw`` output (``stack count`` per line)."""
    counts: Counter[str] = Counter()
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[category(stack)] += int(count)
    return counts


def py_spy() -> str | None:
    """py-spy next to this interpreter (the dev venv has it), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recording:
    """``async with Recording(pid) as rec``: py-spy samples ``pid`` for the block; ``rec.counts`` after."""

    def __init__(self, pid: int, rate: int = 250) -> None:
        self.pid, self.rate = pid, rate
        self.counts: Counter[str] = Counter()
        self._dir = tempfile.TemporaryDirectory(prefix="gpuid-bench-spy-")
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Recording:
        exe = py_spy()
        if exe is None:
            raise SystemExit("--profile needs py-spy: pip install py-spy (it is in the dev extras)")
        self._out = os.path.join(self._dir.name, "raw.txt")
        self._proc = await asyncio.create_subprocess_exec(
            exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--nonblocking",
            "--format", "raw", "--output", self._out,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(1.0)  # py-spy attaches
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        await asyncio.wait_for(self._proc.wait(), 60)
        try:
            self.counts = split(self._out)
        finally:
            self._dir.cleanup()


def report(counts: Counter[str], cpu_ms_per_pod: float) -> None:
    total = sum(counts.values()) or 1
    print(f"CPU split of the gpuid sweep ({total} py-spy samples on CPU; {cpu_ms_per_pod:.2f} ms per pod):")
    for name in CATEGORIES:
        share = counts[name] / total
        print(f"  {name:<28} {share * 100:5.1f} %  {share * cpu_ms_per_pod:6.2f} ms/pod", flush=True)
