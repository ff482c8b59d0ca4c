"""threadkeep benchmarks: `make bench` (python -m bench)."""
