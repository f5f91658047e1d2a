"""Run every benchmark in its default configuration (`make bench`); results go to results/.

Long: about an hour on a 2-core machine. Each script can also be run on its own (see
benchmarks/README.md for their options and targets).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    ["bench_demo.py"],
    ["bench_material.py"],
    ["bench_meshing.py"],
    ["bench_solver.py"],
    ["bench_convergence.py"],
    ["bench_calculix.py"],
    ["bench_abaqus.py"],
]


def main() -> int:
    failures = []
    for script in SCRIPTS:
        start = time.perf_counter()
        print(f"== {' '.join(script)}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / script[0]), *script[1:]])
        print(f"== {script[0]}: exit {code} after {time.perf_counter() - start:.0f} s",
              flush=True)
        if code:
            failures.append(script[0])
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
