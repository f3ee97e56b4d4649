# The commands the README shows. `make setup` once, then `make test` or `make book`.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= quick
# full: every exercise with its solution behind a toggle; student: the same book without any solution
# (book/_build/html-student, rendered from the executed chapters of an earlier build when they are fresh)
EDITION ?= full
# torch is pinned to what this project is tested with; on a GPU machine set TORCH_SPEC to your build
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# without its dependencies: see the note in pyproject.toml
TORCHATTACKS_SPEC ?= torchattacks>=3.5,<4

.PHONY: setup chromium compiler test test-fast test-numerics book bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[book,dev]"
	$(PY) -m pip install -q --no-deps '$(TORCHATTACKS_SPEC)'
	touch $@

# headless Chromium for the rendered-book test (Debian's package)
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# a C++ compiler for torch.compile's CPU kernels (the joint loss's closed-form second derivatives,
# cdn.nets.second_order; without one, training falls back to PyTorch's own, and their tests fail)
compiler:
	@command -v g++ >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq g++ >/dev/null)

# the whole suite, the smoke build of the book included (two chapters at a time), then the numerically
# sensitive tests again on other CPU kernels (measured: 10 minutes on the 2-core Xeon, idle)
test: setup chromium compiler
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-numerics

# the tests whose numbers depend on the kernels (bitwise resume and data-parallel training, the precision
# chosen by "auto", Tweedie and finite-difference scores, the functional and reference joint losses) under
# instruction sets and thread counts other than this machine's own: ATen's unvectorised kernels on one
# thread, and AVX2 for ATen and oneDNN on two. The machines that run CI differ from day to day; a
# test that holds on one CPU only is caught here.
# The comparisons made across processes or precisions (bitwise data-parallel training against the
# one-process reference, the precision "auto" resolves to, bitwise resume of a run) run under both
# settings, with the joint losses' exact identities under the first. The fault tests compare runs of
# one environment with each other (independent of the kernels by construction) and the float64
# mathematics holds to 1e-9 on every kernel; both run once, in the main suite.
NUMERIC_TESTS := tests/test_precision.py tests/test_distributed.py tests/test_train.py
test-numerics: setup
	@echo "[test-numerics] ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1"
	@env ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 \
	  $(PY) -m pytest -q -p no:cacheprovider -m "not book and not slow" $(NUMERIC_TESTS) tests/test_joint.py tests/test_losses.py
	@echo "[test-numerics] ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=2"
	@env ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=2 \
	  $(PY) -m pytest -q -p no:cacheprovider -m "not book and not slow" $(NUMERIC_TESTS)

# everything but the book build and the slow training test
test-fast: setup
	$(PY) -m pytest -q -m "not book and not slow"

# execute every chapter with papermill in PROFILE (smoke | quick | cpu | paper) and build the HTML of
# EDITION (full | student); committed runs (results/<profile>-<dataset>/) are used when their hash
# matches; RETRAIN=1 trains anyway; JOBS=2 executes two chapters at a time (one thread each)
RETRAIN ?=
JOBS ?=
book: setup
	$(PY) -m cdn book --profile $(PROFILE) --edition $(EDITION) $(if $(RETRAIN),--retrain) $(if $(JOBS),--jobs $(JOBS))
	@echo "open book/_build/$(if $(filter student,$(EDITION)),html-student,html)/index.html"

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf book/_build artifacts .pytest_cache
