"""``python -m bench``: run every benchmark in turn; each prints its figures next to its bound."""

from __future__ import annotations

import importlib
import sys

# (module, argv): the fleet benchmark also prints where gpuid's CPU goes (py-spy, in the dev extras).
BENCHMARKS: list[tuple[str, list[str]]] = [
    ("bench.parse", []),
    ("bench.ingest", []),
    ("bench.bugreport", []),
    ("bench.signals", []),
    ("bench.fleet", ["--profile"]),
]


def main() -> int:
    for name, argv in BENCHMARKS:
        print(f"== {name} {' '.join(argv)}".rstrip(), flush=True)
        run = importlib.import_module(name).main
        if argv:
            run(argv)
        else:
            run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
