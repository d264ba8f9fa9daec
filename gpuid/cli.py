"""Command line: ``gpuid`` (watch and export), ``demo``, ``snapshot``, ``inventory``; flags mirror variables.

Every option is an environment variable first (that is how Kubernetes
configures containers) and a flag second; a flag wins over the variable. This
is handed to ``gpuid.config``, which reads the environment and parses both.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence

from gpuid import __version__
from gpuid.config import environment, inventory_settings, load_settings
from gpuid.errors import ConfigError
from gpuid.inventory import add_inventory_parser, run_inventory
from gpuid.log import configure_logging
from gpuid.options import OPTIONS
from gpuid.snapshot import OUTPUTS, run_snapshot


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuid",
        description="Watch NVIDIA GPU pods in Kubernetes and export one identity record per GPU.",
        epilog="Every option is also an environment variable (shown); a flag wins over the variable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gpuid {__version__}")
    add_option_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="watch the cluster and export records (the default)")
    demo = sub.add_parser("demo", help="run the real pipeline against a built-in simulated cluster and exit")
    demo.add_argument("--nodes", type=int, default=3, help="simulated GPU nodes (default 3)")
    demo.add_argument("--snapshot", action="store_true", help="run `gpuid snapshot` against it instead")
    snapshot = sub.add_parser(
        "snapshot",
        help="read every GPU of the cluster once, print the inventory and exit",
        description="List the watched pods, read each ready one once, print one record per GPU "
        "(JSON lines, or a table on a terminal) and a summary on stderr; exit 1 if any pod failed.",
    )
    snapshot.add_argument("--output", "-o", choices=OUTPUTS, help="json, table or csv")
    snapshot.add_argument("--export", action="store_true", help="also send the records to the exporters")
    add_option_flags(
        snapshot, hidden=True
    )  # `gpuid snapshot --kubeconfig x` as well as `gpuid --kubeconfig x snapshot`
    add_inventory_parser(sub)
    return parser


def add_option_flags(parser: argparse.ArgumentParser, *, hidden: bool = False) -> None:
    """One flag per option; ``hidden`` (a subcommand's copy) sets only what is given and is not listed."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for opt in OPTIONS:
        group = groups.get(opt.group) or groups.setdefault(
            opt.group, parser.add_argument_group(f"{opt.group} options")
        )
        default = f"default: {opt.default!r}" if opt.default else "default: unset"
        group.add_argument(
            opt.flag,
            dest=opt.env,
            metavar="VALUE",
            default=argparse.SUPPRESS if hidden else None,
            help=argparse.SUPPRESS if hidden else f"{opt.help} [env {opt.env}; {default}]".replace("%", "%%"),
        )


def flag_values(args: argparse.Namespace) -> dict[str, str]:
    """The options given as flags on the command line, by variable name."""
    return {o.env: v for o in OPTIONS if (v := getattr(args, o.env, None)) is not None}


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
            configure_logging("warning" if args.snapshot else settings.log_level, settings.log_format)
            return asyncio.run(run_demo(settings, nodes=args.nodes, snapshot=args.snapshot))
        if args.command == "snapshot":  # records name the cluster only when they are exported
            values["CLUSTER_NAME"] = values.get("CLUSTER_NAME") or "unnamed"
            settings = load_settings(values)
            configure_logging("warning", settings.log_format)
            return asyncio.run(run_snapshot(settings, output=args.output or "", export=args.export))
        settings = load_settings(values)
        configure_logging(settings.log_level, settings.log_format)
        from gpuid.app import App

        # Everything imported so far lives as long as the process: take it out of the collector's
        # scans (kubernetes_asyncio alone is ~75k objects; rescanning them cost more than parsing
        # nvidia-smi's XML during a sweep; see the README, "What limits scale").
        gc.freeze()
        return asyncio.run(App(settings).run())
    except ConfigError as e:
        print(f"gpuid: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
