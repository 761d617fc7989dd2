"""Benchmarks: speed and memory targets, each module runnable on its own; `python -m benchmarks` runs all."""
