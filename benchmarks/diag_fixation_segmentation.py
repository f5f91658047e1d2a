"""Diagnostic: failure load from automatic vs TotalSegmentator labels under the same fixation.

``osteofe strength`` fixes the distal cut face found by ``fea.loads.distal_cut``: a plane
fitted to the distal boundary triangles, or, when no plane covers enough area, the surface
within ``load.distal_fixed_depth_mm`` (2 mm) of the lowest point. On the 3 mm example CT the
two label maps take different branches (TotalSegmentator's: no plane, 2 mm slab, ~280 nodes;
the automatic one: a plane of ~800 mm^2, part of a ~2000 mm^2 section, ~130 nodes), so their
failure loads compare two fixations, not two segmentations. This script runs ``osteofe
strength`` with the slab fixation forced for every model (all CLI arguments pass through)::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/diag_fixation_segmentation.py -q strength \
        --ct ../shared/data/ct/totalseg_example_ct.nii.gz --side right --body-weight 75 \
        --out /tmp/auto --no-picture --allow-partial

It prints what ``distal_cut`` found and the nodes fixed instead (stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fea.loads as loads
import osteofe.pipeline as pipeline
from fea.landmarks import FemurLandmarks

_ORIGINAL = loads.distal_cut


def _slab_cut(points: npt.NDArray[np.float64], boundary: npt.NDArray[np.int64],
              landmarks: FemurLandmarks, *, depth_mm: float = 2.0) -> loads.DistalCut:
    """The fallback branch of ``distal_cut`` (surface within ``depth_mm`` of the lowest point)."""
    found = _ORIGINAL(points, boundary, landmarks, depth_mm=depth_mm)
    slab = loads.distal_slab(points, boundary, landmarks, depth_mm=depth_mm)
    print(f"distal_cut: planar={found.planar} area={found.area_mm2:.0f} mm^2 "
          f"nodes={found.nodes.size}; fixed instead: {slab.nodes.size} nodes within "
          f"{depth_mm} mm", file=sys.stderr)
    return slab


if __name__ == "__main__":
    pipeline.distal_cut = _slab_cut
    from osteofe.cli import main

    sys.exit(main(sys.argv[1:]))
