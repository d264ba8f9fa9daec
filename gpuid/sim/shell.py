"""A tiny stand-in for the container's shell and nvidia-smi.

gpuid execs ``sh -c SCRIPT`` (to extend PATH to the driver's directory, add
a ``timeout``, chain ``-q -x`` and ``-L``) or a bare argv. This interpreter
understands just enough of that to answer like a real container would:
``;``/``&&``/``||`` sequences, ``VAR=value``/``env``/``exec``/``timeout``
prefixes, ``echo``, ``true``, ``false``, ``exit N`` and ``nvidia-smi`` with
``-q -x`` or ``-L``. Anything else is "not found" with exit 127, which is
what dash prints. A bare argv whose program does not exist is different on
a real cluster: the runtime cannot start it, and the kubelet reports an
``InternalError`` Status with no exit code; that is simulated too. Other
programs (the per-pod files of ``gpuid.sim.podfs``) plug in as a hook; a
program may hand back a file to stream and a run time instead of bytes.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from gpuid.sim.captures import Capture

SHELLS = frozenset({"sh", "bash", "dash", "ash"})
SEPARATORS = frozenset({";", "&&", "||", "\n"})
NO_DRIVER = (
    b"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    b"Make sure that the latest NVIDIA driver is installed and running.\n\n"
)
BAD_ARGS = b"Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n"
NO_PIPES = b"gpuid.sim: pipes and background jobs are not simulated\n"
BUILTINS = frozenset({"true", ":", "false", "echo", "export", "cd", "set", "command", "which"})
# `2>/dev/null`, `>/dev/null`, `2>&1`, `1>&2` become one marker word each before tokenising.
_REDIRECT = re.compile(r"(?<![\w>&])([12]?)>\s*(&[12]|/dev/null)")


@dataclass(frozen=True, slots=True)
class ShellResult:
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    start_error: str | None = None  # set when the runtime could not start the program at all
    stream_file: str | None = None  # host file whose bytes follow ``stdout``, streamed in chunks
    stream_limit: int | None = None  # stream only this many bytes of ``stream_file``
    runtime: float = 0.0  # seconds before the program exits (after its output); math.inf = never


# Programs beyond the built-in ones (e.g. the per-pod files of gpuid.sim.podfs):
# (program, args) -> result, or None when the hook does not know the program.
ProgramHook = Callable[[str, list[str]], ShellResult | None]


def _strip_prefixes(words: list[str]) -> list[str]:
    """Drop ``A=b`` assignments and the ``env``/``exec``/``command``/``timeout DUR`` wrappers."""
    while words:
        head = words[0]
        assignment = "=" in head and not head.startswith("-") and head.split("=", 1)[0].isidentifier()
        wrapper = head in ("env", "exec", "nice") or (head == "command" and words[1:2] != ["-v"])
        if assignment or wrapper:
            words = words[1:]
        elif head == "timeout":
            rest = words[1:]
            while rest and rest[0].startswith("-"):  # -s KILL, -k 5, --preserve-status
                rest = rest[2:] if rest[0] in ("-s", "-k") else rest[1:]
            words = rest[1:]
        else:
            return words
    return words


def _nvidia_smi(args: Sequence[str], capture: Capture | None) -> ShellResult:
    if capture is None:
        return ShellResult(stdout=NO_DRIVER, exit_code=9)
    flags = set(args)
    if "-L" in flags or "--list-gpus" in flags:
        return ShellResult(stdout=capture.listing)
    query = bool(flags & {"-q", "--query"}) or "-qx" in flags or "-xq" in flags
    xml = bool(flags & {"-x", "--xml-format"}) or "-qx" in flags or "-xq" in flags
    if query and xml:
        return ShellResult(stdout=capture.xml)
    return ShellResult(stderr=BAD_ARGS, exit_code=2)


def run_simple(
    words: list[str], capture: Capture | None, *, missing_smi: bool, programs: ProgramHook | None = None
) -> ShellResult | None:
    """Run one simple command; None when the program does not exist in this container."""
    words = _strip_prefixes(words)
    if not words:
        return ShellResult()
    program, args = os.path.basename(words[0]), words[1:]
    if programs is not None and (hooked := programs(program, args)) is not None:
        return hooked
    if program == "nvidia-smi" and not missing_smi:
        return _nvidia_smi(args, capture)
    if program in ("true", ":", "export", "cd", "set"):
        return ShellResult()
    if program in ("command", "which"):  # `command -v nvidia-smi`, `which nvidia-smi`
        found = [a for a in args if a != "-v" and (a in BUILTINS or (a == "nvidia-smi" and not missing_smi))]
        paths = [f"/usr/bin/{a}\n" if a == "nvidia-smi" else f"{a}\n" for a in found]
        return ShellResult(stdout="".join(paths).encode(), exit_code=0 if len(found) == len(args) - 1 else 1)
    if program == "false":
        return ShellResult(exit_code=1)
    if program == "echo":
        newline = not (args and args[0] == "-n")
        text = " ".join(args[0 if newline else 1 :]) + ("\n" if newline else "")
        return ShellResult(stdout=text.encode())
    return None


def _tokens(script: str) -> list[str]:
    script = _REDIRECT.sub(
        lambda m: f" @redirect:{m.group(1) or '1'}:{m.group(2).replace('&', 'fd')} ", script
    )
    lexer = shlex.shlex(script.replace("\n", " ; "), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    return list(lexer)


def _run_redirected(
    words: list[str], capture: Capture | None, *, missing_smi: bool, programs: ProgramHook | None
) -> ShellResult:
    redirects = [w.removeprefix("@redirect:") for w in words if w.startswith("@redirect:")]
    words = [w for w in words if not w.startswith("@redirect:")]
    result = run_simple(words, capture, missing_smi=missing_smi, programs=programs)
    if result is None:
        program = (_strip_prefixes(words) or words)[0]
        result = ShellResult(stderr=f"sh: 1: {program}: not found\n".encode(), exit_code=127)
    out, err = result.stdout, result.stderr
    for redirect in redirects:
        if redirect == "1:/dev/null":
            out, result = b"", replace(result, stream_file=None)
        elif redirect == "2:/dev/null":
            err = b""
        elif redirect == "2:fd1":
            out, err = out + err, b""
        elif redirect == "1:fd2":
            out, err = b"", err + out
    return replace(result, stdout=out, stderr=err)


def run_script(
    script: str, capture: Capture | None, *, missing_smi: bool = False, programs: ProgramHook | None = None
) -> ShellResult:
    """Run ``sh -c script``: simple commands joined by ``;``, ``&&`` and ``||``."""
    try:
        tokens = _tokens(script)
    except ValueError as e:
        return ShellResult(stderr=f"sh: 1: Syntax error: {e}\n".encode(), exit_code=2)
    if "|" in tokens or "&" in tokens:
        return ShellResult(stderr=NO_PIPES, exit_code=2)
    stdout, stderr, code, pending_op = b"", b"", 0, ";"
    words: list[str] = []
    for token in [*tokens, ";"]:
        if token not in SEPARATORS:
            words.append(token)
            continue
        if words and (pending_op == ";" or (pending_op == "&&") == (code == 0)):
            if words[0] == "exit":
                return ShellResult(stdout, stderr, int(words[1]) if len(words) > 1 else code)
            result = _run_redirected(words, capture, missing_smi=missing_smi, programs=programs)
            if result.stream_file or result.runtime:  # a long-running program ends the simulation here
                return replace(result, stdout=stdout + result.stdout, stderr=stderr + result.stderr)
            stdout, stderr, code = stdout + result.stdout, stderr + result.stderr, result.exit_code
        words, pending_op = [], token if token in ("&&", "||") else ";"
    return ShellResult(stdout, stderr, code)


def run_command(
    argv: Sequence[str],
    capture: Capture | None,
    *,
    missing_smi: bool = False,
    programs: ProgramHook | None = None,
) -> ShellResult:
    """Run an exec ``command`` list the way the container runtime would."""
    if len(argv) >= 3 and os.path.basename(argv[0]) in SHELLS and argv[1] == "-c":
        return run_script(argv[2], capture, missing_smi=missing_smi, programs=programs)
    result = run_simple(list(argv), capture, missing_smi=missing_smi, programs=programs) if argv else None
    if result is None:
        program = argv[0] if argv else ""
        return ShellResult(
            exit_code=126,
            start_error=f'failed to exec in container: failed to start exec "{shlex.quote(program)}": '
            f"OCI runtime exec failed: exec failed: unable to start container process: "
            f'exec: "{program}": executable file not found in $PATH: unknown',
        )
    return result
