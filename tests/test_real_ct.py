"""The real TotalSegmentator CT (../shared/data): end to end on the intact right femur."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meshing.imaging import read_ct
from osteofe.cli import EXIT_INPUT, main

pytestmark = [pytest.mark.data, pytest.mark.skip_in_parallel]


@pytest.fixture(scope="module")
def real_ct(shared_data):
    return shared_data / "ct" / "totalseg_example_ct.nii.gz", \
        shared_data / "ct" / "totalseg_example_seg.nii.gz"


def test_right_femur_runs_end_to_end_fixed_at_the_lowest_slice(real_ct, tmp_path):
    ct_path, seg_path = real_ct
    out = tmp_path / "right"
    code = main(["-q", "strength", "--ct", str(ct_path), "--labels", str(seg_path),
                 "--bone-label", "femur_right", "--body-weight", "75", "--out", str(out),
                 "--no-picture", "--allow-partial"])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    # A 54 mm stub fixed at the image border: computed only on request, and flagged.
    assert result["validity"]["valid"] is False and result["validity"]["banner"]
    # On 3 mm voxels the label takes soft-tissue voxels at the head-neck junction, and the
    # failure starts there: 75 % of its averaged surface is at the modulus floor, said so.
    assert result["cases"][0]["critical_floor_share"] > 0.5
    assert any("material at the modulus floor" in r for r in result["validity"]["reasons"])
    assert result["landmarks"]["side"] == "right"
    assert 20.0 < result["landmarks"]["head_radius_mm"] < 28.0
    assert np.isfinite(result["failure_load_N"]) and result["failure_load_N"] > 0.0
    warnings = " ".join(result["warnings"])
    assert "calibration" in warnings and "border" in warnings
    # The fixed nodes sit at the distal cut: the lowest slice of the scan (axis k = z here).
    ct = read_ct(ct_path)
    lowest_slice_z = ct.grid.world_bounds()[0][2]
    import meshio

    mesh = meshio.read(out / "fields.vtu")
    z_min = mesh.points[:, 2].min()
    assert abs(z_min - lowest_slice_z) <= ct.grid.spacing[2]
    reaction = np.array(result["cases"][0]["reaction_at_distal_cut_N"])
    force = np.array(result["cases"][0]["force_world_N"])
    assert np.allclose(reaction, -force, rtol=1e-5, atol=1e-3 * np.linalg.norm(force))


def test_left_femur_with_implant_is_refused(real_ct, tmp_path, capsys):
    ct_path, seg_path = real_ct
    out = tmp_path / "left"
    code = main(["-q", "strength", "--ct", str(ct_path), "--labels", str(seg_path),
                 "--bone-label", "75", "--body-weight", "75", "--out", str(out)])
    assert code == EXIT_INPUT
    err = capsys.readouterr().err
    assert "metal implant" in err and "3000 HU" in err
    assert not out.exists()
