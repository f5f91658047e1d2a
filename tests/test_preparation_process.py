"""The preparation in a child process (osteofe.preparation_process): same model, same errors."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import OsteofeError
from osteofe.config import Config
from osteofe.preparation_process import _child_environment, isolate_preparation, prepare_in_child

pytestmark = pytest.mark.skip_in_parallel  # the child is what runs beside MPI ranks


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from meshing.phantom import PhantomParams, make_phantom, write_phantom

    return write_phantom(make_phantom(PhantomParams(voxel_size_mm=1.5)),
                         tmp_path_factory.mktemp("phantom"))


def _config() -> Config:
    return Config().override("mesh", size_mm=8.0).override("load", cases=("stance", "fall"))


def test_a_child_prepares_the_model_this_process_would(phantom):
    from osteofe.pipeline import StrengthRequest, prepare_model

    request = StrengthRequest(phantom["ct"], phantom["labels"], body_mass_kg=75.0)
    stages: list[str] = []
    child = prepare_in_child(request, _config(), progress=stages.append, ranks=2)
    here = prepare_model(request, _config(), ranks=2)
    np.testing.assert_array_equal(child.mesh.points, here.mesh.points)
    np.testing.assert_array_equal(child.mesh.cells, here.mesh.cells)
    np.testing.assert_array_equal(child.material.E_MPa, here.material.E_MPa)
    np.testing.assert_array_equal(child.fixed_nodes, here.fixed_nodes)
    assert child.loads.keys() == here.loads.keys()
    for name, load in here.loads.items():
        np.testing.assert_array_equal(child.loads[name].patch.force_n, load.patch.force_n)
    assert child.warnings == here.warnings and child.validity == here.validity
    # Progress came back, stage by stage, in order.
    assert stages[0] == "reading images" and len(stages) >= 4
    # The child's own peak (it held the CT and the meshing libraries, not this process).
    assert child.process_peak_rss_mb is not None and child.process_peak_rss_mb > 100.0
    assert here.process_peak_rss_mb is None
    assert child.timings_s["preparation_process"] >= child.timings_s["read"]


def test_the_child_raises_the_preparations_error_with_its_hint(phantom, tmp_path):
    from osteofe.pipeline import StrengthRequest, prepare_model

    missing = StrengthRequest(phantom["ct"], tmp_path / "no_such_labels.nii.gz",
                              body_mass_kg=75.0)
    with pytest.raises(OsteofeError) as here:
        prepare_model(missing, _config())
    with pytest.raises(OsteofeError) as child:
        prepare_in_child(missing, _config())
    assert type(child.value) is type(here.value)
    assert str(child.value) == str(here.value) and child.value.hint == here.value.hint


def test_a_child_killed_by_a_signal_is_an_error_that_names_it(phantom, tmp_path, monkeypatch):
    from osteofe.pipeline import StrengthRequest

    killer = tmp_path / "python"
    killer.write_text("#!/bin/sh\nkill -9 $$\n")
    killer.chmod(killer.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(killer))
    request = StrengthRequest(phantom["ct"], phantom["labels"], body_mass_kg=75.0)
    with pytest.raises(OsteofeError, match="killed by signal SIGKILL without an answer") as err:
        prepare_in_child(request, _config())
    assert 'isolate_preparation = "never"' in err.value.hint


def test_the_child_does_not_inherit_the_mpi_launcher(monkeypatch):
    for name in ("PMI_RANK", "PMI_FD", "HYDRA_CONTROL_FD", "OMPI_COMM_WORLD_RANK",
                 "PMIX_RANK"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = _child_environment()
    assert not [k for k in env if k.startswith(("PMI", "HYDRA_", "OMPI_"))]
    assert env["OMP_NUM_THREADS"] == "1" and env["PATH"] == os.environ["PATH"]


def test_when_the_preparation_is_isolated():
    assert [isolate_preparation(c, 1) for c in ("mpi", "always", "never")] == [
        False, True, False]
    assert [isolate_preparation(c, 2) for c in ("mpi", "always", "never")] == [
        True, True, False]
    from meshing.errors import InputError

    with pytest.raises(InputError, match="did you mean 'always'"):
        Config().override("solver", isolate_preparation="allways")
