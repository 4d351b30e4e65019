"""Benchmarks run by `mtlzoo bench ...` (measured side by side, reported as ratios)."""
