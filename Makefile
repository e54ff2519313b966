# LiteFleet: `make demo` runs the whole story on this machine; `make test` runs the checks.
# Both do their own set-up: a .venv with the agent, the cloud side and the dev tools.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SYSTEM_PACKAGES := scripts/system-packages.sh

.PHONY: help venv system-packages test lint typecheck format pytest fuzz test-train test-fallback demo bench bench-large clean

help:
	@echo "make demo          run the whole story on this machine (broker, cloud, three devices)"
	@echo "make test          ruff, import contracts, mypy and the test suite (sets up $(VENV) first)"
	@echo "make fuzz          the property-based fuzz tests (tests/fuzz) with many more examples"
	@echo "make test-train    the tests that need TensorFlow, in .venv-train"
	@echo "make test-fallback the tflite-runtime fallback test, in .venv-fallback (numpy<2)"
	@echo "make bench         every benchmark in benchmarks/, one JSON line each (no TensorFlow)"
	@echo "make bench-large   the OTA benchmark on a ~5 MB model made with TensorFlow (.venv-train)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cloud,dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

# rewrite the tree in the project's format (what `make lint` checks)
format: $(STAMP)
	$(PY) -m ruff format .

typecheck: $(STAMP)
	$(PY) -m mypy agent cloud shared localio device_profiles

# mosquitto and the other Debian packages the suite runs against: installed when root, otherwise
# the one apt-get line to run (and a stop, before anything else runs).
system-packages:
	@bash $(SYSTEM_PACKAGES)

pytest: $(STAMP) system-packages
	PATH="$$PATH:/usr/sbin" $(PY) -m pytest -m "not train and not fallback" -q

test: system-packages lint typecheck pytest

# The same tests as in `make test`, with the `fuzz` hypothesis profile (tests/fuzz/conftest.py):
# fifty times the examples, some minutes.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/fuzz -q

.venv-train/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-train
	.venv-train/bin/python -m pip install --quiet --upgrade pip
	.venv-train/bin/python -m pip install --quiet -e '.[cloud,train,dev]'
	touch $@

test-train: .venv-train/.installed
	.venv-train/bin/python -m pytest -m train -q

.venv-fallback/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-fallback
	.venv-fallback/bin/python -m pip install --quiet --upgrade pip
	.venv-fallback/bin/python -m pip install --quiet 'numpy<2' 'tflite-runtime==2.14.*' pytest pytest-timeout hypothesis
	.venv-fallback/bin/python -m pip install --quiet --no-deps -e .
	.venv-fallback/bin/python -m pip install --quiet 'opencv-python-headless<4.11' paho-mqtt sqlite-utils 'APScheduler<4' cryptography zstandard psutil
	touch $@

# Only tests/agent/fallback is collected (the rest of the suite needs numpy 2 and LiteRT), and no
# conftest above it is loaded.
test-fallback: .venv-fallback/.installed
	.venv-fallback/bin/python -m pytest tests/agent/fallback -m fallback -q -p no:cacheprovider \
		--confcutdir=tests/agent/fallback

demo: $(STAMP)
	$(PY) -m cloud.demo $(DEMO_ARGS)

# Everything the benchmarks need comes from the repository (examples/models, generated videos)
# and the .venv: no TensorFlow, no machine-specific path.
bench: $(STAMP)
	@for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

bench-large: $(STAMP) .venv-train/.installed
	LITEFLEET_TF_PYTHON=.venv-train/bin/python $(PY) benchmarks/ota_update.py --models large

clean:
	rm -rf $(VENV) .venv-train .venv-fallback .demo .pytest_cache .mypy_cache .ruff_cache
