"""Benchmarks (not part of the package): ``python -m bench [--quick]`` runs them all; see bench/README.md."""
