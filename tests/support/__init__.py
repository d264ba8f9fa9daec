"""Helpers shared by the tests and the benchmarks: services, the app under test, records, waiting."""
