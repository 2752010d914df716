"""qedge benchmark suite: ``python -m benchmarks [--quick]`` (also ``qedge bench``)."""
