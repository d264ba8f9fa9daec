"""Files inside simulated pods, and the programs that make and read them.

Bug-report collection runs ``nvidia-bug-report.sh`` in a driver pod, then
``sha256sum``, ``wc -c``, ``cat`` and ``rm`` on the file it wrote, so the sim
needs a file system per pod. Files live on the host disk under one temp
directory (``<root>/<namespace>/<pod>/<container path>``), never in memory:
the fake script writes a real gzip file of the configured size in 1 MiB
pieces, and ``cat`` hands the exec layer a path to stream, so a 50 MB report
costs the sim a chunk at a time. Per-pod behaviour (size, run time, script
missing or failing, a download that stalls) is set with ``set_bug_report``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import random
import shutil
import tempfile
import weakref
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gpuid.sim.shell import ProgramHook, ShellResult

SCRIPT = "nvidia-bug-report.sh"
PIECE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BugReportBehaviour:
    """How ``nvidia-bug-report.sh`` behaves in one pod; the default is a quick 256 KiB report."""

    size: int = 256 * 1024  # bytes of the .gz written (approximately: gzip framing adds a little)
    runtime: float = 0.0  # seconds the script runs; math.inf = hangs (after writing half the file)
    missing: bool = False  # the script is not in this container: `sh: 1: ...: not found`, exit 127
    exit_code: int = 0  # non-zero: the script fails without writing a file
    stall_download_after: int | None = None  # `cat` of the report sends this many bytes, then hangs


def _gzip_file(path: Path, size: int, seed: int) -> None:
    """A valid gzip stream of about ``size`` bytes: stored (level 0) blocks of random bytes."""
    rng = random.Random(seed)  # noqa: S311 - filler bytes, not secrets
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0, mtime=0) as gz:
        left = max(0, size - 18 - 5 * math.ceil(size / 65535))  # header, trailer, block headers
        while left > 0:
            piece = min(PIECE, left)
            gz.write(rng.randbytes(piece))
            left -= piece


class PodFiles:
    """Per-pod files on the host disk, and the file programs of the simulated shell."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root
        self._behaviour: dict[tuple[str, str], BugReportBehaviour] = {}
        self._finalizer: weakref.finalize[..., PodFiles] | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="gpuid-sim-fs-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._root, True)
        return self._root

    def close(self) -> None:
        """Remove every simulated file now (also done when the object is garbage collected)."""
        if self._finalizer is not None:
            self._finalizer()

    def set_bug_report(self, pod: str, *, namespace: str = "gpu-operator", **behaviour: object) -> None:
        """Set how the script behaves in ``namespace/pod`` (``BugReportBehaviour`` fields)."""
        self._behaviour[(namespace, pod)] = BugReportBehaviour(**behaviour)  # type: ignore[arg-type]

    def host_path(self, namespace: str, pod: str, path: str) -> Path:
        """Where the container path ``path`` of ``namespace/pod`` lives on the host."""
        pure = PurePosixPath("/", path)
        if ".." in pure.parts:
            raise ValueError(f"path escapes the pod: {path}")
        return self.root / namespace / pod / str(pure).lstrip("/")

    def files(self, namespace: str, pod: str) -> list[str]:
        """Container paths of every file in ``namespace/pod``, sorted."""
        base = self.root / namespace / pod
        if not base.is_dir():
            return []
        return sorted("/" + str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def programs(self, namespace: str, pod: str) -> ProgramHook:
        """The hook the shell calls for programs it does not know itself."""
        return lambda program, args: self._run(namespace, pod, program, args)

    def _run(self, namespace: str, pod: str, program: str, args: list[str]) -> ShellResult | None:
        behaviour = self._behaviour.get((namespace, pod), BugReportBehaviour())
        operands = [a for a in args if not a.startswith("-")]
        if program == SCRIPT:
            return None if behaviour.missing else self._bug_report(namespace, pod, args, behaviour)
        if program not in ("sha256sum", "wc", "cat", "rm"):
            return None
        try:
            found = [(a, self.host_path(namespace, pod, a)) for a in operands]
        except ValueError as e:
            return ShellResult(stderr=f"{program}: {e}\n".encode(), exit_code=1)
        missing = [a for a, p in found if not p.is_file()]
        if program == "rm":
            for _, host in found:
                host.unlink(missing_ok=True)
            errors = (
                "" if "-f" in args else "".join(f"rm: cannot remove '{a}': No such file\n" for a in missing)
            )
            return ShellResult(stderr=errors.encode(), exit_code=1 if errors else 0)
        if missing:
            error = f"{program}: {missing[0]}: No such file or directory\n"
            return ShellResult(stderr=error.encode(), exit_code=1)
        if program == "sha256sum":
            return ShellResult(stdout="".join(f"{_sha256(p)}  {a}\n" for a, p in found).encode())
        if program == "wc":
            return ShellResult(stdout="".join(f"{p.stat().st_size} {a}\n" for a, p in found).encode())
        stall = behaviour.stall_download_after if any(a.endswith(".gz") for a in operands) else None
        return ShellResult(
            stream_file=str(found[0][1]) if found else None,
            stream_limit=stall,
            runtime=math.inf if stall is not None else 0.0,
        )

    def _bug_report(
        self, namespace: str, pod: str, args: list[str], behaviour: BugReportBehaviour
    ) -> ShellResult:
        if "--output-file" not in args or args.index("--output-file") + 1 >= len(args):
            return ShellResult(stdout=b"nvidia-bug-report.sh: usage\n", exit_code=1)
        if behaviour.exit_code:
            return ShellResult(stderr=b"ERROR: could not collect\n", exit_code=behaviour.exit_code)
        output = args[args.index("--output-file") + 1]
        output = output if output.endswith(".gz") else output + ".gz"
        hung = math.isinf(behaviour.runtime)
        size = behaviour.size // 2 if hung else behaviour.size
        _gzip_file(
            self.host_path(namespace, pod, output),
            size,
            seed=zlib.crc32(f"{namespace}/{pod}{output}".encode()),
        )
        banner = f"nvidia-bug-report.sh will now collect information about your system\n{output}\n"
        return ShellResult(stdout=banner.encode(), runtime=behaviour.runtime)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(PIECE):
            digest.update(chunk)
    return digest.hexdigest()
