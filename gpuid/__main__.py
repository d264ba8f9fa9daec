"""``python -m gpuid``: the same entry point as the ``gpuid`` console script."""

from gpuid.cli import main

raise SystemExit(main())
