"""Benchmarks: `make bench` (python -m bench) measures each scenario against its baseline and writes
docs/benchmarks.md and bench/results.json."""
