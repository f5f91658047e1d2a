"""Regenerate docs/report_page1.png: page 1 of the report of a lesioned phantom femur.

Run: ``.venv/bin/python docs/make_report_page.py [WORK_FOLDER]``. It runs ``osteofe strength``
on the built-in phantom with a 12 mm lytic calcar lesion (stance and sideways fall, a
12-direction sweep, Mirels pain item given, the phantom's own scanner line), writes the
report with page pictures and copies page 1 here. Takes about a minute on 2 cores.
"""

import shutil
import sys
from pathlib import Path

# This checkout's packages, also when run as a script from another folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshing.phantom import LesionParams, PhantomParams, make_phantom, write_phantom
from osteofe.cli import main
from osteofe.report import write_report

work = Path(sys.argv[1] if len(sys.argv) > 1 else "report_page_work")
phantom = write_phantom(make_phantom(PhantomParams(), LesionParams(site="calcar",
                                                                    radius_mm=12.0)),
                        work / "phantom")
out = work / "result"
assert main(["-q", "strength", "--ct", str(phantom["ct"]), "--labels", str(phantom["labels"]),
             "--body-weight", "75", "--out", str(out), "--case-id", "phantom-lesion",
             "--load", "stance", "fall", "--sweep", "12", "--pain", "moderate",
             "--calibration", "0.0008", "-0.01"]) == 0
pages = write_report(out, work / "report", page_png=True)
target = Path(__file__).resolve().parent / "report_page1.png"
shutil.copyfile(pages["page_01"], target)
print(f"{target} ({target.stat().st_size} bytes) from {pages['pdf']}")
