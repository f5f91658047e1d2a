# osteofe: `make demo` and `make test` build the environment themselves when it is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.osteofe-installed
OUT ?= demo_out
NP ?= 2

# The first Python >= 3.12 among: PATH, Debian 13's /usr/bin, pyenv's versions.
PYTHON_CANDIDATES := python3.13 python3.12 /usr/bin/python3.13 /usr/bin/python3.12 \
	$(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3) \
	$(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) python3
FIND_PYTHON := for p in $(PYTHON_CANDIDATES); do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	echo $$p; break; fi; done

.PHONY: all env demo test test-serial test-mpi test-all lint typecheck bench devstack clean

all: test

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
		base=$$($(FIND_PYTHON)); \
		if [ -z "$$base" ]; then \
			echo "error: osteofe needs Python >= 3.12 (DOLFINx wheel). Install python3.12 or python3.13, or set up pyenv, then rerun make." >&2; \
			exit 1; \
		fi; \
		echo "creating $(VENV) with $$base"; \
		$$base -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/osteofe demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"
	$(VENV)/bin/mpiexec -n $(NP) $(PY) -m pytest -q -m "mpi and not slow" -p no:cacheprovider

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy core fea meshing material risk osteofe

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The FEniCSx stack of this venv as one tarball (.devstack/), for benchmark machines without
# network access: benchmarks/device_strong_scaling.sh unpacks it over the host's numpy/numba.
SITE = $(VENV)/lib/python3.12/site-packages
devstack: $(STAMP)
	mkdir -p .devstack/include
	cd $(VENV) && tar cf - --exclude=__pycache__ \
		$(patsubst $(VENV)/%,%,$(wildcard $(SITE)/_cffi_backend.* $(SITE)/basix $(SITE)/cffi \
		$(SITE)/cffi-*.dist-info $(SITE)/dolfinx $(SITE)/dolfinx_solver $(SITE)/dolfinx_solver_real* \
		$(SITE)/fenics_* $(SITE)/ffcx $(SITE)/ufl $(SITE)/mpi4py $(SITE)/mpi4py-*.dist-info \
		$(SITE)/mpich-*.dist-info $(SITE)/petsc4py $(SITE)/pycparser $(SITE)/pycparser-*.dist-info)) \
		lib/libmpi* lib/mpich bin/mpiexec* bin/hydra* bin/mpirun include \
		| xz -9 -T0 > ../.devstack/fenics_stack.tar.xz
	cp -r "$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['include'])")" .devstack/include/
	@ls -l .devstack/fenics_stack.tar.xz

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache *.egg-info
