"""The benchmark suite of bulkopens: ``python -m benchmarks.run`` (see benchmarks/README.md)."""
