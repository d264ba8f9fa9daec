"""The simulated pod file system and the fake nvidia-bug-report.sh behind the exec shell."""

from __future__ import annotations

import gzip
import hashlib
import math

from gpuid.sim import SimCluster, run_command
from gpuid.sim.podfs import PodFiles

SCRIPT = 'PATH="$PATH:/run/nvidia/driver/usr/bin" exec timeout -s KILL 300 nvidia-bug-report.sh'


def run(files: PodFiles, argv: list[str], pod: str = "drv"):  # type: ignore[no-untyped-def]
    return run_command(argv, None, programs=files.programs("gpu-operator", pod))


def test_script_writes_a_real_gzip_of_the_configured_size_and_tools_agree_on_it() -> None:
    files = PodFiles()
    try:
        files.set_bug_report("drv", size=300_000)
        done = run(files, ["sh", "-c", f"{SCRIPT} --output-file /tmp/r.log >/dev/null"])
        assert (done.exit_code, done.stdout) == (0, b"")  # progress text went to /dev/null
        assert files.files("gpu-operator", "drv") == ["/tmp/r.log.gz"]  # the script appends .gz
        host = files.host_path("gpu-operator", "drv", "/tmp/r.log.gz")
        data = host.read_bytes()
        assert abs(len(data) - 300_000) < 64
        assert len(gzip.decompress(data)) > 290_000  # a valid gzip stream, not just bytes
        sums = run(files, ["sh", "-c", "sha256sum /tmp/r.log.gz && wc -c /tmp/r.log.gz"])
        first, second = sums.stdout.decode().splitlines()
        assert first == f"{hashlib.sha256(data).hexdigest()}  /tmp/r.log.gz"
        assert second == f"{len(data)} /tmp/r.log.gz"
        cat = run(files, ["cat", "/tmp/r.log.gz"])
        assert cat.stream_file == str(host)  # streamed from disk by the exec layer, never loaded
        assert (cat.stdout, cat.stream_limit, cat.runtime) == (b"", None, 0.0)
        assert run(files, ["rm", "-f", "/tmp/r.log", "/tmp/r.log.gz"]).exit_code == 0
        assert files.files("gpu-operator", "drv") == []
    finally:
        files.close()
    assert not files.root.exists()


def test_missing_script_failing_script_hung_script_and_stalled_cat() -> None:
    files = PodFiles()
    try:
        files.set_bug_report("gone", missing=True)
        done = run(files, ["sh", "-c", f"{SCRIPT} --output-file /tmp/a.log"], pod="gone")
        assert done.exit_code == 127
        assert b"nvidia-bug-report.sh: not found" in done.stderr

        files.set_bug_report("bad", exit_code=3)
        done = run(files, ["sh", "-c", f"{SCRIPT} --output-file /tmp/a.log"], pod="bad")
        assert done.exit_code == 3
        assert files.files("gpu-operator", "bad") == []

        files.set_bug_report("hung", runtime=math.inf, size=100_000, stall_download_after=1000)
        done = run(files, ["sh", "-c", f"{SCRIPT} --output-file /tmp/a.log"], pod="hung")
        assert math.isinf(done.runtime)  # the exec layer never sends its status
        assert files.files("gpu-operator", "hung") == ["/tmp/a.log.gz"]  # a partial report exists
        cat = run(files, ["cat", "/tmp/a.log.gz"], pod="hung")
        assert (cat.stream_limit, math.isinf(cat.runtime)) == (1000, True)

        missing = run(files, ["sh", "-c", "sha256sum /tmp/nope.gz && wc -c /tmp/nope.gz"])
        assert missing.exit_code == 1
        assert b"No such file or directory" in missing.stderr
    finally:
        files.close()


def test_paths_cannot_escape_the_pod() -> None:
    files = PodFiles()
    try:
        escaped = run(files, ["cat", "/tmp/../../../etc/passwd"])
        assert (escaped.exit_code, escaped.stream_file) == (1, None)
        assert b"path escapes the pod" in escaped.stderr
    finally:
        files.close()


def test_every_sim_cluster_has_pod_files_and_other_programs_still_work() -> None:
    cluster = SimCluster()
    hook = cluster.pod_files.programs("gpu-operator", "p")
    assert run_command(["sh", "-c", "echo hi && nvidia-smi -L"], None, programs=hook).stdout.startswith(
        b"hi\n"
    )
    assert run_command(["sh", "-c", "frobnicate"], None, programs=hook).exit_code == 127
