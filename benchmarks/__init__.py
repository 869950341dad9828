"""Benchmark suite of the HSSN ops: ``python -m benchmarks`` (see docs/benchmarks.md).

Cases are defined once in :mod:`benchmarks.cases`; :mod:`benchmarks.runner` measures them,
:mod:`benchmarks.report` writes JSON, Markdown and PNG plots; ``pytest benchmarks --benchmark-only``
runs the same cases through pytest-benchmark.
"""