"""The PostgreSQL exporter: reading history, current inventory and GPU moves."""
