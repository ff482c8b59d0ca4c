"""`make bench`: every benchmark section, each beside its raw-driver baseline.

Run `python -m bench [section ...]`; each section module has `main(argv)`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SECTIONS = (
    "bench_core",
    "bench_redis",
    "bench_postgres",
    "bench_http",
    "bench_crm",
    "bench_encryption",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sections", nargs="*", default=list(SECTIONS))
    args = parser.parse_args()
    for name in args.sections:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            sys.stderr.write(f"skipping {name}: {exc}\n")
            continue
        sys.stdout.write(f"\n# {name}\n")
        sys.stdout.flush()
        module.main([])


if __name__ == "__main__":
    main()
