"""Time `osteofe demo` end to end (environment already built), as a new user runs it.

Usage: .venv/bin/python benchmarks/bench_demo.py [--repeat N]
Target (issue 1/6): under 5 minutes on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run([str(ROOT / ".venv" / "bin" / "osteofe"), "--quiet", "demo", "--out",
                            tmp], check=True, cwd=ROOT)
            wall = time.perf_counter() - start
            summary = json.loads((Path(tmp) / "summary.json").read_text())
            stage_times = {}
            for case in ("intact", "lesion"):
                result = json.loads((Path(tmp) / case / "result.json").read_text())
                stage_times[case] = result["timings_s"]
            runs.append({"wall_s": round(wall, 2), "summary": summary,
                         "stage_timings_s": stage_times})
        print(f"demo wall time {wall:.1f} s; intact {summary['cases'][0]['failure_load_N']:.0f} N,"
              f" lesion {summary['cases'][1]['failure_load_N']:.0f} N "
              f"(ratio {summary['lesion_to_intact_ratio']:.2f})")
    best = min(r["wall_s"] for r in runs)
    path = save("demo", {"target_s": 300.0, "best_wall_s": best, "runs": runs})
    print(f"best of {len(runs)}: {best:.1f} s (target < 300 s) -> {path}")


if __name__ == "__main__":
    main()
