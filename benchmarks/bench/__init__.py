"""Benchmark driver: run the same predictors on several runtimes and judge the goals.

``python -m bench`` (from ``benchmarks/``, through its Makefile) measures; ``targets``
declares the goals; ``report`` turns medians into the results table.
"""
