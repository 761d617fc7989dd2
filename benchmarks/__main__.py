"""Run every benchmark module (``bench_*.py``) in turn and print its figures.

    python -m benchmarks [NAME...]     e.g. ``python -m benchmarks scheduler triage``

Each module runs with its own defaults (its command-line arguments are for
running it alone: ``python -m benchmarks.bench_scheduler 2 3 4``).
"""

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    for name in names:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        saved, sys.argv = sys.argv, [name]  # the module's own argument parsing sees no arguments
        try:
            module.main()
        finally:
            sys.argv = saved
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
