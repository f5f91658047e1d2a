"""osteofe from Python: one femur, two load cases, the typed result (a notebook's worth).

Run it as ``python docs/example_analyze.py [FOLDER]`` (default: ./example_out); the test
suite runs it too (tests/test_api.py). Each block below is one notebook cell.
"""

import sys
from pathlib import Path

# This checkout's packages, also when run as a script from another folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import osteofe
from meshing.phantom import LesionParams, PhantomParams, make_phantom, write_phantom

out = Path(sys.argv[1] if len(sys.argv) > 1 else "example_out")

# 1. Inputs: the built-in synthetic femur CT (HU) and its labels, with a 12 mm lytic lesion
#    at the calcar. For a patient: the CT (DICOM folder or NIfTI) and a segmentation.
paths = write_phantom(
    make_phantom(PhantomParams(voxel_size_mm=1.0), LesionParams(site="calcar", radius_mm=12.0)),
    out / "phantom")

# 2. The analysis: stance and sideways fall, a coarse mesh (5 mm) and P1 so that it runs in
#    seconds; the defaults (3 mm, P2) are the validated ones. The scanner line is the
#    phantom's own (rho_QCT = -0.01 + 0.0008 * HU g/cm^3).
result = osteofe.analyze(
    paths["ct"], paths["labels"], body_mass_kg=75, out=out / "result",
    loads=("stance", "fall"), mesh_size_mm=5.0, degree=1, sweep=4,
    calibration=(0.0008, -0.01), pain="moderate", case_id="example")

# 3. The typed result: every number is a field or a property, not a dictionary key.
print(f"{'load case':<10} {'failure load':>13} {'x BW':>6} {'phi':>5}  region")
for case in result.cases:
    print(f"{case.load_case:<10} {case.failure_load_N:>11.0f} N "
          f"{case.failure_load_N / result.body_weight_N:>6.2f} "
          f"{case.load_to_strength_ratio:>5.2f}  {case.critical_region}")
weakest = result.weakest
print(f"governing: {result.governing.load_case}; weakest over the swept directions: "
      f"{weakest.failure_load_N:.0f} N ({weakest.load_case})")
if result.lesion is not None:
    print(f"Mirels {result.lesion.mirels_total}/12, axial cortical involvement "
          f"{result.lesion.aci_mm:.0f} mm")

# 4. result.json is the serialisation of the same object: read it back, get the same result.
again = osteofe.load_result(out / "result")
assert again == result
print(f"result.json: schema {again.schema_version}, {len(again.provenance.outputs)} files")
