"""Benchmarks; results go to bench/results/*.json and docs/benchmarks.md."""
