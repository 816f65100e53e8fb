"""Benchmark scripts: each runs alone as ``python -m benchmarks.NAME`` from the repo root.

``python -m benchmarks.all`` runs them all and renders ``benchmarks/README.md``.
"""
