"""Faults of the output folder and of MPI ranks, attacked at the command line.

Every attack checks the exit code, the one ``error:`` line (message and hint) and that no
result was written. The ``--out`` attacks are pre-flighted before any analysis, so they
cost no FE run; the MPI ones run ``mpiexec -n 2`` in a subprocess with a timeout (a hang
fails the test instead of blocking the suite).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from meshing.errors import InputError, OsteofeError
from meshing.phantom import PhantomParams, make_phantom, write_phantom
from osteofe.cli import EXIT_INPUT, main
from osteofe.outputs import OutputError, clean_stale_staging, staged_output

#: A cheap model: 1.5 mm voxels, 6 mm elements (a run takes a few seconds).
PHANTOM = replace(PhantomParams(), voxel_size_mm=1.5, soft_tissue_mm=3.0, distal_cut_mm=150.0)
CHEAP = ["--mesh-size", "6", "--no-picture"]
REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
needs_mpiexec = pytest.mark.skipif(not MPIEXEC.exists(),
                                   reason="mpiexec not found beside the Python interpreter")

#: Most tests start their own processes (or mpiexec): serial pytest only. The ``mpi`` ones
#: also run in-process under ``mpiexec -n 2 pytest -m mpi``.
serial = pytest.mark.skip_in_parallel


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_phantom(make_phantom(PHANTOM), tmp_path_factory.mktemp("phantom"))


def _args(phantom: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["-q", "strength", "--ct", str(phantom["ct"]), "--labels", str(phantom["labels"]),
            "--body-weight", "75", "--out", str(out), *CHEAP, *extra]


def _litter(folder: Path) -> list[str]:
    """Staging folders, probes and lock files an osteofe run left in ``folder``."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(".") and (".staging-" in p.name or ".probe-" in p.name
                                                 or p.name.endswith(".lock")))


def _expect_error(args: list[str], capsys: pytest.CaptureFixture[str], *patterns: str) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for pattern in patterns:
        assert pattern in lines[0], err
    assert "(hint: " in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def earlier(phantom: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete result folder of an earlier run (with its report)."""
    out = tmp_path_factory.mktemp("earlier") / "result"
    assert main(_args(phantom, out, "--report")) == 0
    return out


# -- pre-flight of --out: before any analysis --------------------------------------------------


@serial
def test_out_that_is_an_existing_file_is_refused(phantom, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.write_text("my notes")
    _expect_error(_args(phantom, out), capsys, f"output folder {out} is an existing file")
    assert out.read_text() == "my notes"
    assert _litter(tmp_path) == []


@serial
@pytest.mark.parametrize("command", ["demo", "phantom"])
def test_demo_and_phantom_refuse_an_unusable_out_before_any_work(command, tmp_path,
                                                                 capsys) -> None:
    out = tmp_path / "out"
    out.write_text("my notes")
    start = time.perf_counter()
    _expect_error([command, "--out", str(out)], capsys,
                  f"output folder {out} is an existing file")
    assert time.perf_counter() - start < 5, "refused only after building the phantom"
    assert out.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@serial
def test_out_below_a_file_is_refused(phantom, tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub" / "out"
    _expect_error(_args(phantom, out), capsys, f"{tmp_path / 'file'} is a file, not a folder")
    assert (tmp_path / "file").read_text() == "x"


def _unwritable(tmp_path: Path) -> Path:
    """An output folder that cannot be written: a read-only folder, or /sys as root."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "out"
    # As root the permission bits do not stop writes; sysfs refuses new entries.
    probe = Path("/sys/osteofe-test-probe")
    try:
        probe.mkdir()
    except OSError:
        return Path("/sys/osteofe-test-out")
    probe.rmdir()
    pytest.skip("running as root and /sys is writable: no read-only folder to test with")


@serial
def test_read_only_out_is_refused_before_the_analysis(phantom, tmp_path, capsys) -> None:
    out = _unwritable(tmp_path)
    start = time.perf_counter()
    _expect_error(_args(phantom, out), capsys, "is not writable", "--out you may write to")
    assert time.perf_counter() - start < 10, "refused only after the analysis"
    assert not out.exists()


@serial
def test_too_little_free_space_is_refused(phantom, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OSTEOFE_MIN_FREE_MB", "1e12")  # more than any disk has
    out = tmp_path / "out"
    _expect_error(_args(phantom, out), capsys, "MB free on the file system of",
                  "a run needs at least 1000000000000 MB")
    assert list(tmp_path.iterdir()) == []


@serial
def test_a_bad_free_space_setting_is_refused(phantom, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OSTEOFE_MIN_FREE_MB", "lots")
    _expect_error(_args(phantom, tmp_path / "out"), capsys,
                  "OSTEOFE_MIN_FREE_MB='lots' is not a non-negative number")
    assert list(tmp_path.iterdir()) == []


@serial
def test_missing_parent_folders_made_for_a_failed_run_are_removed(phantom, tmp_path,
                                                                    capsys) -> None:
    out = tmp_path / "a" / "b" / "out"
    args = _args(phantom, out)
    args[args.index("--body-weight") + 1] = "-5"
    code = main(args)
    assert code == EXIT_INPUT, capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- the final write ----------------------------------------------------------------------------


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", "result.json")


@serial
def test_disk_full_at_the_final_write_keeps_the_earlier_result(phantom, earlier, tmp_path,
                                                              capsys, monkeypatch) -> None:
    out = tmp_path / "result"
    shutil.copytree(earlier, out)
    before = _files(out)
    monkeypatch.setattr("osteofe.pipeline.atomic_write_text", _disk_full)
    _expect_error(_args(phantom, out), capsys, f"cannot write the results to {out}",
                  "No space left on device", "nothing was written", "free disk space")
    assert _files(out) == before
    assert _litter(tmp_path) == []


@serial
def test_disk_full_at_the_final_write_of_a_first_run_writes_nothing(phantom, tmp_path, capsys,
                                                                   monkeypatch) -> None:
    out = tmp_path / "result"
    monkeypatch.setattr("osteofe.pipeline.atomic_write_text", _disk_full)
    _expect_error(_args(phantom, out), capsys, "No space left on device")
    assert list(tmp_path.iterdir()) == []


@serial
def test_a_move_that_fails_midway_restores_the_earlier_files(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text('{"outputs": ["a.txt", "result.json"]}')
    (out / "a.txt").write_text("old a")
    real_replace = os.replace
    calls = []

    def flaky(src: str | Path, dst: str | Path) -> None:
        calls.append(Path(dst).name)
        if Path(src).name == "b.txt" and Path(dst).parent == out:
            raise OSError(errno.EIO, "Input/output error", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr("osteofe.outputs.os.replace", flaky)
    with pytest.raises(OutputError, match="Input/output error"), staged_output(out) as stage:
        for name in ("a.txt", "b.txt", "result.json"):
            (stage / name).write_text(f"new {name}")
    assert _files(out) == {"a.txt": b"old a",
                           "result.json": b'{"outputs": ["a.txt", "result.json"]}'}
    assert _litter(tmp_path) == []


# -- reruns, concurrent runs, killed runs -------------------------------------------------------


@serial
def test_a_rerun_leaves_exactly_its_own_files(phantom, earlier, tmp_path) -> None:
    listed = json.loads((earlier / "result.json").read_text())["outputs"]
    assert listed == ["fields.vtu", "report.html", "report.pdf", "result.json"]
    assert sorted(p.name for p in earlier.iterdir()) == sorted(listed)
    out = tmp_path / "result"
    shutil.copytree(earlier, out)
    # What `osteofe report` may have added to the earlier result, and a file of the user's.
    (out / "report.dcm").write_bytes(b"DICM")
    (out / "report_page_01.png").write_bytes(b"png")
    (out / "my_notes.txt").write_text("keep me")
    assert main(_args(phantom, out)) == 0
    listed = json.loads((out / "result.json").read_text())["outputs"]
    assert listed == ["fields.vtu", "result.json"]
    assert sorted(p.name for p in out.iterdir()) == ["fields.vtu", "my_notes.txt",
                                                     "result.json"]
    assert (out / "my_notes.txt").read_text() == "keep me"


_HOLDER = """
import sys
from pathlib import Path
from osteofe.outputs import reserve_output, staged_output
out = Path(sys.argv[1])
with reserve_output(out):
    # As if killed while writing its results: a staging folder with a partial file.
    with staged_output(out) as stage:
        (stage / "fields.vtu").write_text("partial")
        print("holding", flush=True)
        sys.stdin.read()
"""


@serial
def test_a_concurrent_run_is_refused_and_a_killed_run_blocks_nothing(phantom, tmp_path,
                                                                      capsys) -> None:
    out = tmp_path / "result"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        _expect_error(_args(phantom, out), capsys, f"output folder {out} is in use by another "
                      f"osteofe run", f"pid {holder.pid}", "choose another --out")
        assert not out.exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait(timeout=30)
        if holder.stdin is not None:
            holder.stdin.close()
        if holder.stdout is not None:
            holder.stdout.close()
    left = [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    assert len(left) == 1 and (left[0] / "fields.vtu").read_text() == "partial"
    # The next run is not blocked by the dead holder's lock and cleans its staging folder.
    assert main(_args(phantom, out)) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["fields.vtu", "result.json"]
    assert (out / "fields.vtu").read_text() != "partial"
    assert _litter(tmp_path) == []


@serial
def test_staging_folders_of_live_processes_and_old_unowned_ones(tmp_path) -> None:
    out = tmp_path / "out"
    mine = tmp_path / f".out.staging-x-{os.getpid()}-abc"  # another host's name format
    live = staged_output(out)
    stage = live.__enter__()
    legacy_old = tmp_path / ".out.staging-k2j3h4"
    legacy_new = tmp_path / ".out.staging-q9w8e7"
    for folder in (mine, legacy_old, legacy_new):
        folder.mkdir()
    os.utime(legacy_old, (time.time() - 7200, time.time() - 7200))
    removed = clean_stale_staging(out)
    assert removed == [legacy_old]
    assert stage.is_dir() and mine.is_dir() and legacy_new.is_dir()
    live.__exit__(None, None, None)


# -- MPI: every rank ends, with one message and the same exit code ------------------------------

#: Runs the command line on every rank; prints each rank's exit code; optionally makes one
#: function raise on one rank first (argv: FAULT=module:attr:rank:kind or -).
_RANKS = """
import sys
from mpi4py import MPI
fault, argv = sys.argv[1], sys.argv[2:]
if fault != "-":
    import importlib
    target, rank, kind = fault.rsplit(":", 2)
    module_name, attr = target.split(":")
    module = importlib.import_module(module_name)
    owner = module
    for part in attr.split(".")[:-1]:
        owner = getattr(owner, part)
    name = attr.split(".")[-1]
    original = getattr(owner, name)
    def broken(*args, **kwargs):
        if MPI.COMM_WORLD.rank == int(rank):
            if kind == "input":
                from meshing.errors import InputError
                raise InputError(f"injected fault on rank {rank}", "none: a test")
            raise RuntimeError(f"injected bug on rank {rank}")
        return original(*args, **kwargs)
    setattr(owner, name, broken)
from osteofe.cli import main
code = main(argv)
print(f"rank {MPI.COMM_WORLD.rank} exits {code}", file=sys.stderr, flush=True)
sys.exit(code)
"""


def _mpi(fault: str, args: list[str], timeout: float = 120) -> tuple[int, str, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-c", _RANKS, fault,
                           *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=timeout)
    return proc.returncode, proc.stderr, time.perf_counter() - start


def _one_line(err: str, prefix: str) -> str:
    # mpiexec forwards the two ranks' stderr in chunks, so the harness's own "rank N exits C"
    # marker (printed after main returns) can land inside the other rank's line.
    err = re.sub(r"(rank \d+ exits \d+)", r"\n\1\n", err)
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, err
    return lines[0]


@serial
@needs_mpiexec
@pytest.mark.parametrize("attack", ["file", "read_only"])
def test_mpi_unusable_out_ends_both_ranks_with_code_3(attack, phantom, tmp_path) -> None:
    if attack == "file":
        out = tmp_path / "out"
        out.write_text("my notes")
        expected = "is an existing file"
    else:
        out = _unwritable(tmp_path)
        expected = "is not writable"
    code, err, wall = _mpi("-", _args(phantom, out))
    assert code == EXIT_INPUT, err
    assert "rank 0 exits 3" in err and "rank 1 exits 3" in err, err
    assert expected in _one_line(err, "error:")
    assert wall < 60
    if attack == "file":
        assert out.read_text() == "my notes"
    else:
        assert not out.exists()


@serial
@needs_mpiexec
def test_mpi_unexpected_exception_on_rank_0_ends_both_ranks(phantom, tmp_path) -> None:
    out = tmp_path / "out"
    # Under MPI rank 0 prepares in a child process (solver.isolate_preparation = "mpi").
    code, err, _ = _mpi("osteofe.pipeline:prepare_in_child:0:bug", _args(phantom, out))
    assert code == 1, err
    assert "rank 0 exits 1" in err and "rank 1 exits 1" in err, err
    assert err.count("Traceback") == 1, err
    assert "RuntimeError: injected bug on rank 0" in err
    _one_line(err, "internal error:")
    assert not out.exists()


@serial
@needs_mpiexec
def test_mpi_error_on_rank_1_alone_is_raised_on_both_ranks(phantom, tmp_path) -> None:
    """Rank 1 fails after the last collective step; rank 0 goes on but may not write."""
    out = tmp_path / "out"
    code, err, _ = _mpi("osteofe.pipeline:_boundary_record:1:input", _args(phantom, out))
    assert code == EXIT_INPUT, err
    assert "rank 0 exits 3" in err and "rank 1 exits 3" in err, err
    assert "injected fault on rank 1" in _one_line(err, "error:")
    assert not out.exists() and _litter(tmp_path) == []


@serial
@needs_mpiexec
def test_mpi_error_on_rank_1_while_rank_0_waits_in_the_solver_aborts_all(phantom,
                                                                        tmp_path) -> None:
    """Rank 0 is inside a PETSc collective waiting for rank 1: an abort within seconds."""
    out = tmp_path / "out"
    code, err, wall = _mpi("fea.solver:ElasticModel.solve:1:input", _args(phantom, out))
    assert code == EXIT_INPUT, err
    line = _one_line(err, "error:")
    assert "injected fault on rank 1" in line and "ending all ranks" in line
    assert wall < 60, "the ranks were not ended within seconds"
    assert not out.exists()


# -- the mechanism itself, in-process (also under `mpiexec -n 2 pytest -m mpi`) ----------------


class _Unpicklable(Exception):
    def __init__(self, message: str, extra: object) -> None:
        super().__init__(message)
        self.extra = extra

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("not picklable")


@pytest.mark.mpi
def test_on_root_raises_any_exception_of_rank_0_on_every_rank() -> None:
    from mpi4py import MPI

    from osteofe.parallel import RankError, on_root

    comm = MPI.COMM_WORLD

    def fail() -> None:
        raise ZeroDivisionError("rank 0's bug")

    with pytest.raises(ZeroDivisionError, match="rank 0's bug"):
        on_root(comm, fail)

    def weird() -> None:
        raise _Unpicklable("cannot travel", object())

    expected = _Unpicklable if comm.rank == 0 else RankError
    with pytest.raises(expected, match="cannot travel"):
        on_root(comm, weird)
    assert on_root(comm, lambda: comm.rank + 41) == 41


@pytest.mark.mpi
def test_agree_on_error_raises_one_ranks_error_on_every_rank() -> None:
    from mpi4py import MPI

    from osteofe.parallel import agree_on_error, on_root

    comm = MPI.COMM_WORLD
    last = comm.size - 1
    written: list[int] = []
    with pytest.raises(OsteofeError, match=f"bad input on rank {last}"), agree_on_error(comm):
        if comm.rank == last:
            raise InputError(f"bad input on rank {last}", "fix it")
        on_root(comm, lambda: written.append(1))  # must not run after rank `last` failed
    assert written == []
    with agree_on_error(comm):  # and the ranks stay usable afterwards
        total = comm.allreduce(1)
    assert total == comm.size


@serial
def test_exit_codes_and_lines_of_the_parallel_module() -> None:
    from osteofe.parallel import error_line, exit_code

    assert exit_code(InputError("x")) == 3 and exit_code(RuntimeError("x")) == 1
    assert exit_code(KeyboardInterrupt()) == 130
    assert error_line(InputError("bad", "fix")) == "error: bad (hint: fix)"
    assert error_line(KeyError("k")) == "internal error: KeyError: 'k'"


@serial
def test_sigkill_of_a_staging_writer_leaves_a_folder_the_next_write_removes(tmp_path) -> None:
    out = tmp_path / "out"
    code = textwrap.dedent("""
        import os, signal, sys
        from osteofe.outputs import staged_output
        with staged_output(sys.argv[1]) as stage:
            (stage / "half.vtu").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert len([p for p in tmp_path.iterdir() if ".staging-" in p.name]) == 1
    with staged_output(out) as stage:
        (stage / "result.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@serial
def test_any_other_file_system_error_is_a_message_not_a_traceback(tmp_path, capsys) -> None:
    # A folder where the phantom's CT file goes: the writer's own OSError, past the checks.
    out = tmp_path / "phantom"
    (out / "ct.nii.gz").mkdir(parents=True)
    line = _expect_error(["-q", "phantom", "--out", str(out)], capsys, "Is a directory",
                         "check that the folder is writable")
    assert "ct.nii.gz" in line
    assert (out / "ct.nii.gz").is_dir()
