"""Node labels with each node's chassis and GPU serials, written after each scan (opt-in)."""
