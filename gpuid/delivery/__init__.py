"""Getting records to every exporter: one bounded lane per backend, retries, and the on-disk spool."""
