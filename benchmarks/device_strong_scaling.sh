#!/usr/bin/env bash
# Strong scaling of the FE core (issue "FE core") on a lent many-core machine that has no
# network: the FEniCSx stack travels as a tarball of this venv's packages (.devstack/, made by
# `make devstack`), is unpacked into a fresh venv layered over the host's numpy/numba/scipy,
# and bench_solver.py --ranks runs the fixed 2e6-DOF P1 box on 1, 2, 4, 8 and 16 ranks.
#
# Goal (issue "scale out"): whole-analysis parallel efficiency (bench_solver's "analysis":
# distribute + assembly + GAMG set-up + 3 load cases) >= 75 % at 16 ranks against 1 rank;
# the check at the end prints GOAL MET / GOAL NOT MET from the results file.
# MEMORY_RANKS="1 2 16" also runs benchmarks/bench_memory_ranks.py (a whole strength
# analysis of the phantom at ~1e6 DOFs: peak RSS per rank on those rank counts).
#
# Usage (on the device, from the repository root; OUT = where results are copied):
#   OUT=/some/dir OSTEOFE_BENCH_COMMIT=<sha> bash benchmarks/device_strong_scaling.sh [DOFS] [RANKS]
set -u -o pipefail
DOFS=${1:-2e6}
RANKS=${2:-1,2,4,8,16}
OUT=${OUT:-/tmp/osteofe_scaling}
STACK=.devstack/fenics_stack.tar.xz
NAME=${NAME:-solver_scaling_device}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/scaling.log") 2>&1

echo "== host"; nproc; grep -m1 "model name" /proc/cpuinfo; free -g | head -2
command -v gcc cc || echo "no C compiler: DOLFINx's form JIT cannot run"
HOST_PY=${HOST_PY:-python3}
HOST_SITE=$($HOST_PY -c "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))")
echo "host python: $($HOST_PY --version) site: $HOST_SITE"

echo "== stack"
rm -rf /tmp/venv && $HOST_PY -m venv --without-pip /tmp/venv || exit 2
tar xJf "$STACK" -C /tmp/venv || exit 2
SITE=/tmp/venv/lib/python3.12/site-packages
echo "$HOST_SITE" > "$SITE/zz_host_packages.pth"   # after ours on sys.path
PYINC=$(/tmp/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
if [ ! -f "$PYINC/Python.h" ]; then
    echo "no Python.h at $PYINC: using the carried 3.12 headers for the form JIT"
    export CPATH=$PWD/.devstack/include/python3.12
fi
/tmp/venv/bin/python -c "
import fea.backend as b; d = b.load_backend(); from mpi4py import MPI; import numba
print('dolfinx', d.__version__, MPI.Get_library_version().splitlines()[0], 'numba', numba.__version__)
" || exit 3

echo "== strong scaling, ~$DOFS DOFs, ranks $RANKS"
timeout "${SCALING_TIMEOUT:-470}" /tmp/venv/bin/python benchmarks/bench_solver.py \
    --ranks "$RANKS" --dofs "$DOFS" --name "$NAME" --timeout 400
echo "driver exit $?"
cp benchmarks/results/$NAME.json "$OUT/" 2>/dev/null || echo "no results file"
/tmp/venv/bin/python - "benchmarks/results/$NAME.json" <<'PY' || true
import json, sys
rows = {r["ranks"]: r for r in json.load(open(sys.argv[1])).get("scaling", [])}
top = max(rows) if rows else None
if top is None or min(rows) != 1:
    print("goal check: needs a 1-rank and a many-rank record"); sys.exit(0)
eff = rows[top]["efficiency_analysis"]
print(f"whole-analysis efficiency at {top} ranks: {100 * eff:.0f} % (goal >= 75 % at 16):",
      "GOAL MET" if top >= 16 and eff >= 0.75 else "GOAL NOT MET")
PY
if [ -n "${MEMORY_RANKS:-}" ]; then
    echo "== memory per rank, ranks $MEMORY_RANKS"
    timeout "${MEMORY_TIMEOUT:-400}" /tmp/venv/bin/python benchmarks/bench_memory_ranks.py \
        --ranks $MEMORY_RANKS --name memory_ranks_device
    echo "memory driver exit $?"
    cp benchmarks/results/memory_ranks_device.json "$OUT/" 2>/dev/null || echo "no memory file"
fi
