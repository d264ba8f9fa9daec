"""Command line: ``gpuid`` (watch and export), ``gpuid demo``; flags mirror environment variables.

Every option is an environment variable first (that is how Kubernetes
configures containers) and a flag second; a flag wins over the variable. This
is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from gpuid import __version__
from gpuid.config import OPTIONS, Settings, load_settings
from gpuid.errors import ConfigError
from gpuid.log import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuid",
        description="Watch NVIDIA GPU pods in Kubernetes and export one identity record per GPU.",
        epilog="Every option is also an environment variable (shown); a flag wins over the variable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gpuid {__version__}")
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
            help=f"{opt.help} [env {opt.env}; {default}]".replace("%", "%%"),
        )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="watch the cluster and export records (the default)")
    demo = sub.add_parser("demo", help="run the real pipeline against a built-in simulated cluster and exit")
    demo.add_argument("--nodes", type=int, default=3, help="simulated GPU nodes (default 3)")
    return parser


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    values = dict(environ)
    for opt in OPTIONS:
        flag_value = getattr(args, opt.env, None)
        if flag_value is not None:
            values[opt.env] = flag_value
    return load_settings(values)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environ = dict(os.environ)
    try:
        if args.command == "demo":
            from gpuid.demo import run_demo

            environ.setdefault("CLUSTER_NAME", "demo")
            settings = settings_from(args, environ)
            configure_logging(settings.log_level, settings.log_format)
            return asyncio.run(run_demo(settings, nodes=args.nodes))
        settings = settings_from(args, environ)
        configure_logging(settings.log_level, settings.log_format)
        from gpuid.app import App

        return asyncio.run(App(settings).run())
    except ConfigError as e:
        print(f"gpuid: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
