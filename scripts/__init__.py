"""Thin wrappers: set-up, demo, pipeline, benchmarks."""
