"""``gpuid inventory``: the RMA desk's questions, answered from PostgreSQL without SQL.

Where is this GPU now, which GPUs moved, what is in this node, what has gone
quiet. It reads the tables the postgres exporter writes, with the same
``POSTGRES_*`` settings, and prints a table (or JSON lines with ``--json``).
An unreachable database or missing tables give one clear line on stderr and
exit code 1; bad settings exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from gpuid.exporters.postgres.settings import PostgresSettings
from gpuid.options import parse_duration

_PLACE = (
    "cluster, gpu_uuid, gpu_serial, product_name, node, machine, pci_bus_id, first_seen, last_seen, moves"
)
_MOVE = "moved_at, cluster, gpu_uuid, gpu_serial, from_node, from_machine, to_node, to_machine, previous_seen"


def add_inventory_parser(
    subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()
) -> argparse.ArgumentParser:
    """Add ``inventory`` and its queries to the CLI's subparsers (``parents``: the option flags)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    common.add_argument("--cluster", default="", help="only GPUs of this cluster")
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "inventory",
        parents=list(parents),
        help="where GPUs are and where they were (reads PostgreSQL)",
        description="Query the inventory the postgres exporter keeps. Connection: the POSTGRES_* variables.",
    )
    queries = parser.add_subparsers(dest="inventory_query", required=True, metavar="QUERY")
    where = queries.add_parser("where", parents=[common], help="where a GPU is now, by board serial or UUID")
    where.add_argument("gpu", metavar="SERIAL|UUID")
    moves = queries.add_parser("moves", parents=[common], help="GPUs seen on a different machine than before")
    moves.add_argument(
        "--since",
        type=parse_duration,
        default=parse_duration("24h"),
        help="how far back (e.g. 24h, 7d; default 24h)",
    )
    moves.add_argument("--gpu", default="", metavar="SERIAL|UUID", help="only this GPU: its whole journey")
    node = queries.add_parser("node", parents=[common], help="the GPUs in a node now")
    node.add_argument("node")
    stale = queries.add_parser("stale", parents=[common], help="GPUs not seen for a while")
    stale.add_argument(
        "--older-than", type=parse_duration, default=parse_duration("24h"), help="e.g. 24h, 7d (default 24h)"
    )
    parser.set_defaults(command="inventory")
    return parser


def build_query(args: argparse.Namespace, inventory: str, moves: str) -> tuple[str, list[Any]]:
    """SQL and parameters for the query ``args`` asks for; names come quoted from ``Tables``."""
    params: list[Any] = []
    where: list[str] = []

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if args.cluster:
        where.append(f"cluster = {bind(args.cluster)}")
    now = datetime.now(UTC)
    if args.inventory_query == "where":
        gpu = bind(args.gpu)
        where.append(f"(gpu_uuid = {gpu} OR gpu_serial = {gpu})")
        table, columns, order = inventory, _PLACE, "last_seen DESC"
    elif args.inventory_query == "node":
        where.append(f"node = {bind(args.node)}")
        table, columns, order = inventory, _PLACE, "gpu_index, gpu_uuid"
    elif args.inventory_query == "stale":
        where.append(f"last_seen < {bind(now - timedelta(seconds=args.older_than))}")
        table, columns, order = inventory, _PLACE, "last_seen"
    else:
        where.append(f"moved_at >= {bind(now - timedelta(seconds=args.since))}")
        if args.gpu:
            gpu = bind(args.gpu)
            where.append(f"(gpu_uuid = {gpu} OR gpu_serial = {gpu})")
        table, columns, order = moves, _MOVE, "moved_at DESC"
    sql = f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY {order}"  # noqa: S608 - quoted names, bound values
    return sql, params


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return "-" if value is None else str(value)


def render(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], as_json: bool, out: TextIO) -> None:
    if as_json:
        for row in rows:
            out.write(json.dumps({c: row[c] for c in columns}, default=_text, separators=(",", ":")) + "\n")
        return
    cells = [[_text(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


async def run_inventory(
    args: argparse.Namespace, config: PostgresSettings, *, out: TextIO | None = None
) -> int:
    """Run one ``gpuid inventory`` query; returns the process exit code."""
    out = out or sys.stdout
    try:
        from gpuid.exporters.postgres.exporter import connect, postgres_error
        from gpuid.exporters.postgres.schema import Tables, check_schema
    except ImportError:
        print("gpuid inventory needs asyncpg: pip install 'gpuid[postgres]'", file=sys.stderr)
        return 2
    tables = Tables.from_settings(config)
    sql, params = build_query(args, tables.inventory, tables.moves)
    try:
        conn = await connect(config)
    except Exception as e:
        print(f"gpuid inventory: cannot reach PostgreSQL: {postgres_error(e, config)}", file=sys.stderr)
        return 1
    try:
        await check_schema(conn, tables)
        rows = await conn.fetch(sql, *params)
    except Exception as e:
        print(f"gpuid inventory: {postgres_error(e, config)}", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    columns = [c.strip() for c in (_MOVE if args.inventory_query == "moves" else _PLACE).split(",")]
    if rows or args.json:
        render(rows, columns, args.json, out)
    if not rows and args.inventory_query == "where":
        print(f"gpuid inventory: no GPU with serial or UUID {args.gpu!r}", file=sys.stderr)
        return 1
    if not rows and not args.json:
        print("(no GPUs match)", file=sys.stderr)
    return 0
