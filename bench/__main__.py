"""``python -m bench``: run every benchmark in turn; each prints its figures next to its bound."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["bench.parse", "bench.bugreport", "bench.signals", "bench.fleet"]


def main() -> int:
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        importlib.import_module(name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
