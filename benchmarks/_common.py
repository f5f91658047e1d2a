"""Shared helpers of the benchmark scripts: provenance and JSON output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo ('' where unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def provenance(ranks: int = 1) -> dict[str, Any]:
    """Commit, package versions, machine and MPI ranks of a benchmark run."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, cwd=Path(__file__).parent).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True,
                                    text=True, cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        # A copy of the tree without .git (e.g. on a lent benchmark machine): the launcher
        # may name the commit it copied.
        commit, dirty = os.environ.get("OSTEOFE_BENCH_COMMIT", "unknown"), True
    versions = {}
    for dist in ("osteofe", "dolfinx-solver-real", "numpy", "numba", "gmsh", "scipy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty_tree": dirty,
        "versions": versions,
        "machine": {"platform": platform.platform(), "cpu": platform.machine(),
                    "cpu_model": _cpu_model(), "cores": os.cpu_count()},
        "mpi_ranks": ranks,
    }


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus provenance if absent) to benchmarks/results/<name>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload.setdefault("provenance", provenance())
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path
