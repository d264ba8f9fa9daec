"""Command line: ``gpuid`` (watch and export), ``gpuid demo``; flags mirror environment variables.

Every option is an environment variable first (that is how Kubernetes
configures containers) and a flag second; a flag wins over the variable. This
is handed to ``gpuid.config``, which reads the environment and parses both.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from argparse import SUPPRESS
from collections.abc import Sequence

from gpuid import __version__
from gpuid.config import environment, inventory_settings, load_settings
from gpuid.errors import ConfigError
from gpuid.inventory import add_inventory_parser, run_inventory
from gpuid.log import configure_logging
from gpuid.options import OPTIONS


def options_parser() -> argparse.ArgumentParser:
    """Every option as a flag, grouped as in ``OPTIONS``; shared by the top level and each command.

    Defaults are suppressed so a flag given before the command is not reset by the
    command's own copy; booleans take ``--flag``/``--no-flag``.
    """
    parser = argparse.ArgumentParser(add_help=False)
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
    parser = argparse.ArgumentParser(
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
    demo.add_argument("--nodes", type=int, default=3, help="simulated GPU nodes (default 3)")
    add_inventory_parser(sub, parents=[options])
    return parser


def flag_values(args: argparse.Namespace) -> dict[str, str]:
    """The options given as flags on the command line, by variable name (booleans as true/false)."""
    given = {o.env: getattr(args, o.env) for o in OPTIONS if hasattr(args, o.env)}
    return {env: str(v).lower() if isinstance(v, bool) else str(v) for env, v in given.items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = environment(flag_values(args))
    try:
        if args.command == "inventory":  # reads PostgreSQL only: no CLUSTER_NAME needed
            configure_logging("warning", "auto")
            try:
                config = inventory_settings(values)
            except ConfigError as e:
                print(f"gpuid inventory: {e}", file=sys.stderr)
                return 2
            return asyncio.run(run_inventory(args, config))
        if args.command == "demo":
            from gpuid.demo import run_demo

            values.setdefault("CLUSTER_NAME", "demo")
            settings = load_settings(values)
            configure_logging(settings.log_level, settings.log_format)
            return asyncio.run(run_demo(settings, nodes=args.nodes))
        settings = load_settings(values)
        configure_logging(settings.log_level, settings.log_format)
        from gpuid.app import App

        # Everything imported so far lives as long as the process: take it out of the collector's
        # scans (kubernetes_asyncio alone is ~75k objects; rescanning them cost more than parsing
        # nvidia-smi's XML during a sweep; see docs/benchmarks.md, "What limits scale").
        gc.freeze()
        return asyncio.run(App(settings).run())
    except ConfigError as e:
        print(f"gpuid: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
