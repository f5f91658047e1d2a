"""Shared fixtures and helpers: the real data folder, MPI-safe temporary directories,
rotation matrices, the CalculiX marker, the CLI-refusal check."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _comm_world():
    try:
        from mpi4py import MPI
    except ImportError:  # pragma: no cover
        return None
    return MPI.COMM_WORLD


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The licensed real data folder ``../shared/data``; skips with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (it is not redistributable; "
                    "see ../shared/data/README.md)")
    return SHARED_DATA


#: Skip a test that runs CalculiX where ``ccx`` is not installed.
needs_ccx = pytest.mark.skipif(shutil.which("ccx") is None,
                               reason="CalculiX (ccx) not installed: apt-get install calculix-ccx")

_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


def rotation(axis: str | npt.ArrayLike, angle_deg: float) -> npt.NDArray[np.float64]:
    """(3, 3) right-handed rotation by ``angle_deg`` about ``axis`` (Rodrigues' formula).

    ``axis`` is ``"x"``, ``"y"``, ``"z"`` or any non-zero 3-vector (normalised here).
    """
    a = np.asarray(_AXES[axis] if isinstance(axis, str) else axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    t = math.radians(angle_deg)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(t) * k + (1.0 - math.cos(t)) * (k @ k)


def cli_refuses(args: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; expect exit 3, one ``error:`` line with a hint, and nothing written.

    Returns:
        The error line.
    """
    from osteofe.cli import EXIT_INPUT, main

    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "(hint: " in lines[0], err
    assert not out.exists(), f"{out} was created"
    return lines[0]


def lesion_phantom_run(root: Path, case_id: str, *args: str) -> Path:
    """A real ``osteofe strength`` run of the phantom with a 12 mm calcar lesion (1 mm voxels,
    75 kg, 5 mm mesh); ``args`` are further command-line options. Returns the result folder."""
    from meshing.phantom import LesionParams, PhantomParams, make_phantom, write_phantom
    from osteofe.cli import main

    phantom = write_phantom(make_phantom(PhantomParams(voxel_size_mm=1.0),
                                         LesionParams(site="calcar", radius_mm=12.0)),
                            root / "phantom")
    out = root / "result"
    assert main(["-q", "strength", "--ct", str(phantom["ct"]), "--labels",
                 str(phantom["labels"]), "--body-weight", "75", "--out", str(out),
                 "--case-id", case_id, "--mesh-size", "5", *args]) == 0
    return out


@pytest.fixture
def mpi_tmp_path(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory shared by all ranks (rank 0's ``tmp_path``)."""
    comm = _comm_world()
    if comm is None or comm.size == 1:
        yield tmp_path
        return
    path = comm.bcast(str(tmp_path) if comm.rank == 0 else None, root=0)
    yield Path(path)
    comm.barrier()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``skip_in_parallel`` when running under ``mpiexec -n >1``."""
    comm = _comm_world()
    if comm is None or comm.size == 1:
        return
    skip = pytest.mark.skip(reason="serial-only test (running under mpiexec)")
    for item in items:
        if "skip_in_parallel" in item.keywords:
            item.add_marker(skip)
