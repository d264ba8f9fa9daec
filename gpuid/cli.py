"""Command line: ``gpuid`` (watch and export), ``demo``, ``snapshot``, ``inventory``; flags mirror variables.

Every option is an environment variable first (that is how Kubernetes
configures containers) and a flag second; a flag wins over the variable. This
is handed to ``gpuid.config``, which reads the environment and parses both.
Whatever ends the process ends it with one JSON log line (when logs are JSON):
a configuration or usage error (exit 2), an unexpected exception (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import threading
from argparse import SUPPRESS
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

import structlog

from gpuid import __version__
from gpuid.config import environment, inventory_settings, load_settings
from gpuid.errors import ConfigError
from gpuid.inventory import add_inventory_parser, run_inventory
from gpuid.log import (
    configure_logging,
    early_format,
    install_crash_handlers,
    log_errors,
    loop_exception_handler,
)
from gpuid.options import OPTIONS, parse_int
from gpuid.snapshot import OUTPUTS, run_snapshot

log = structlog.get_logger("gpuid")


class _Parser(argparse.ArgumentParser):
    """Usage errors are configuration errors: one log line and exit code 2, like a bad variable."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")


def _demo_nodes(text: str) -> int:
    try:
        value = parse_int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 1 and 100")
    return value


def options_parser() -> _Parser:
    """Every option as a flag, grouped as in ``OPTIONS``; shared by the top level and each command.

    Defaults are suppressed so a flag given before the command is not reset by the
    command's own copy; booleans take ``--flag``/``--no-flag``.
    """
    parser = _Parser(add_help=False)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for opt in OPTIONS:
        group = groups.get(opt.group) or groups.setdefault(
            opt.group, parser.add_argument_group(f"{opt.group} options")
        )
        default = f"default: {opt.default!r}" if opt.default else "default: unset"
        helptext = f"{opt.help} [env {opt.env}; {default}]".replace("%", "%%")
        if opt.default in ("true", "false"):
            group.add_argument(
                opt.flag, dest=opt.env, action=argparse.BooleanOptionalAction, default=SUPPRESS, help=helptext
            )
        else:
            group.add_argument(opt.flag, dest=opt.env, metavar="VALUE", default=SUPPRESS, help=helptext)
    return parser


def build_parser() -> argparse.ArgumentParser:
    options = options_parser()
    parser = _Parser(
        prog="gpuid",
        description="Watch NVIDIA GPU pods in Kubernetes and export one identity record per GPU.",
        epilog="Every option is also an environment variable (shown); a flag wins over the variable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[options],
    )
    parser.add_argument("--version", action="version", version=f"gpuid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", parents=[options], help="watch the cluster and export records (the default)")
    demo = sub.add_parser(
        "demo", parents=[options], help="run the real pipeline against a built-in simulated cluster and exit"
    )
    demo.add_argument("--nodes", type=_demo_nodes, default=3, help="simulated GPU nodes (1-100, default 3)")
    demo.add_argument("--snapshot", action="store_true", help="run `gpuid snapshot` against it instead")
    snapshot = sub.add_parser(
        "snapshot",
        parents=[options],
        help="read every GPU of the cluster once, print the inventory and exit",
        description="List the watched pods, read each ready one once, print one record per GPU "
        "(JSON lines, or a table on a terminal) and a summary on stderr; exit 1 if any pod failed.",
    )
    snapshot.add_argument("--output", "-o", choices=OUTPUTS, help="json, table or csv")
    snapshot.add_argument("--export", action="store_true", help="also send the records to the exporters")
    add_inventory_parser(sub, parents=[options])
    return parser


def flag_values(args: argparse.Namespace) -> dict[str, str]:
    """The options given as flags on the command line, by variable name (booleans as true/false)."""
    given = {o.env: getattr(args, o.env) for o in OPTIONS if hasattr(args, o.env)}
    return {env: str(v).lower() if isinstance(v, bool) else str(v) for env, v in given.items()}


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run`` with the loop's last-resort error handler logging JSON lines."""

    async def guarded() -> int:
        asyncio.get_running_loop().set_exception_handler(loop_exception_handler)
        return await main

    return asyncio.run(guarded())


def main(argv: Sequence[str] | None = None) -> int:
    hooks = sys.excepthook, threading.excepthook
    install_crash_handlers()
    configure_logging("info", early_format(environment({})))  # until the settings say otherwise
    try:
        args = build_parser().parse_args(argv)
        values = environment(flag_values(args))
        configure_logging("info", early_format(values))
        return _run(args, values)
    except ConfigError as e:
        log.error("configuration error", error=str(e), error_type="ConfigError")
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one JSON line for what nobody expected, never a raw traceback
        log_errors("gpuid crashed", e)
        return 1
    finally:
        sys.excepthook, threading.excepthook = hooks


def _run(args: argparse.Namespace, values: dict[str, str]) -> int:
    if args.command == "inventory":  # reads PostgreSQL only: no CLUSTER_NAME needed
        configure_logging("warning", early_format(values))
        return run_loop(run_inventory(args, inventory_settings(values)))
    if args.command == "demo":
        from gpuid.demo import run_demo

        values.setdefault("CLUSTER_NAME", "demo")
        settings = load_settings(values)
        configure_logging("warning" if args.snapshot else settings.log_level, settings.log_format)
        return run_loop(run_demo(settings, nodes=args.nodes, snapshot=args.snapshot))
    if args.command == "snapshot":  # records name the cluster only when they are exported
        values["CLUSTER_NAME"] = values.get("CLUSTER_NAME") or "unnamed"
        settings = load_settings(values)
        configure_logging("warning", settings.log_format)
        return run_loop(run_snapshot(settings, output=args.output or "", export=args.export))
    settings = load_settings(values)
    configure_logging(settings.log_level, settings.log_format)
    from gpuid.app import App

    # Everything imported so far lives as long as the process: take it out of the collector's
    # scans (kubernetes_asyncio alone is ~75k objects; rescanning them cost more than parsing
    # nvidia-smi's XML during a sweep; see docs/benchmarks.md, "What limits scale").
    gc.freeze()
    return run_loop(App(settings).run())
