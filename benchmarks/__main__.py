"""`python -m benchmarks [name …]`: run the benchmark scripts and print their figures.

Each benchmark is a module here with an async `main()`; they are never collected as tests.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if not m.name.startswith("_"))


def run(names: list[str]) -> int:
    for name in names or available():
        if name not in available():
            print(f"unknown benchmark {name!r}; choose from {', '.join(available())}",
                  file=sys.stderr)
            return 2
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        asyncio.run(module.main())
    return 0


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
