# archbench: two commands on a fresh machine.
#   make run    installs what it needs, runs the seed study over seeds 0,1,2 (ARGS="..." replaces the options)
#   make test   installs what it needs, runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.archbench-installed
TEST_STAMP := $(VENV)/.archbench-test-installed
SYSTEM_DATA := /usr/share/datasets/fashion-mnist
TORCH_PIN := torch==2.13.0
# The main job: the seed study over three seeds, so the report can tell a real
# difference from noise. Override with e.g. make run ARGS='--seeds 0'.
ARGS ?= --seeds 0,1,2

.PHONY: run test lint install install-test data browser bench clean

run: install data
	$(VENV)/bin/archbench run $(ARGS)

test: install-test data browser lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The style gate: ruff (pyflakes, pycodestyle, imports, bugbear, pyupgrade) and mypy, configured in pyproject.toml.
lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install-test data
	$(PY) benchmarks/seed_study.py $(BENCH_ARGS)

# `make run` installs what the main job needs (torch, numpy, safetensors,
# tqdm, matplotlib); `make test` adds the test extra (pytest, hypothesis,
# SciPy, ONNX, Ray, MLflow, Keras, ruff, mypy).
install: $(STAMP)
install-test: $(TEST_STAMP)

# PyTorch first, pinned: the CPU wheel on disk. A bare `torch` requirement
# with nothing installed would pull a multi-GB CUDA build from the index.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(TEST_STAMP)

# Debian's dataset-fashion-mnist, installed when missing and we are root.
data:
	@if [ -e "$(SYSTEM_DATA)/train-images-idx3-ubyte.gz" ]; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's dataset-fashion-mnist"; \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
		echo "warning: apt-get could not install dataset-fashion-mnist"; \
	else \
		echo "note: Fashion-MNIST is not in $(SYSTEM_DATA) and installing it needs root:"; \
		echo "  sudo apt-get install dataset-fashion-mnist"; \
		echo "or download it: $(VENV)/bin/archbench data fetch"; \
		echo "or point archbench at your copy: make run ARGS='--data-dir DIR' (or ARCHBENCH_DATA=DIR)"; \
	fi

# Debian's Chromium, for the test that opens report.html in a real headless browser
# (skipped with a visible reason where it cannot be installed).
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium (for the report.html browser test)"; \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null)) || \
		echo "warning: could not install chromium; the browser test will be skipped"; \
	else \
		echo "note: chromium not installed (needs root); the browser test will be skipped"; \
	fi

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
