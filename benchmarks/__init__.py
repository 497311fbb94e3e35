"""Benchmarks: streamfeat side by side with the tools users would pick instead.

`python -m benchmarks.run --size smoke|full` runs them all; see benchmarks/README.md.
"""
