# shapegrad: `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BACKENDS := tensorflow jax torch
# The slow cases (whole searches and training runs, subprocesses) run once, on this backend: the
# one that runs them fastest (eager PyTorch compiles nothing).
SLOW_BACKEND := torch
PYTEST_ARGS ?=

.PHONY: demo test stress bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The venv's own pip (Python >= 3.11 bundles pip >= 23: editable installs from pyproject.toml); no upgrade.
	# torch==2.13.0 is the CPU build on this machine's disk; a bare `torch` pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[tensorflow,jax,torch,test]"
	# The gallery test opens index.html in Debian's chromium; without it that test is skipped, the build goes on.
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && apt-get update -q \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
	  || echo "chromium not installed: the browser test of index.html will be skipped"
	touch $@

# JAX is the fastest backend for the demo's training on this CPU; KERAS_BACKEND=... make demo overrides.
demo: $(VENV)/.installed
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(PY) -m shapegrad.demo

# Each backend runs tests/ and the docstring examples of shapegrad/ (testpaths and --doctest-modules in
# pyproject.toml), the three side by side (TEST_JOBS=1: one after the other); tests/run_backends.sh.
TEST_JOBS ?= 3
test: $(VENV)/.installed
	@bash tests/run_backends.sh $(PY) "$(BACKENDS)" $(SLOW_BACKEND) $(TEST_JOBS) $(PYTEST_ARGS)

stress: $(VENV)/.installed
	@set -e; for b in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$b, deep hypothesis profile ==="; \
	  HYPOTHESIS_PROFILE=stress KERAS_BACKEND=$$b $(PY) -m pytest -q -m "not slow" -k "hypothesis or property" $(PYTEST_ARGS); \
	done

# Cones and Render against their baselines on each backend (results-<backend>.json), then
# benchmarks/results.md and benchmarks/scaling.png from all of them. Minutes per backend on an idle
# 2-core CPU; BENCH_ARGS=--quick for a smoke test (it overwrites the result files).
BENCH_ARGS ?=
bench: $(VENV)/.installed
	@set -e; for b in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$b ==="; \
	  KERAS_BACKEND=$$b $(PY) -m shapegrad.cli bench --out benchmarks $(BENCH_ARGS); \
	done
	KERAS_BACKEND=jax $(PY) -m shapegrad.cli bench --report --out benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
