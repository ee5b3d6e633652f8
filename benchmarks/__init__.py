"""The benchmarks of openbayes-serving: the driver lives in the ``bench`` package."""
