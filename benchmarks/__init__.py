"""Benchmarks: one script per measured question (``python -m benchmarks.<name>``),
timed with :mod:`benchmarks.timing`. Not part of the installed package."""
