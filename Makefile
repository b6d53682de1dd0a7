# Each target sets up what it needs in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# PyTorch as your platform gets it; e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch
# The installer into $(VENV): pip, or e.g. PIP="uv pip install --compile-bytecode --python $(PY)" (faster; .ci/run uses it).
PIP ?= $(PY) -m pip install --quiet

WEB := webapp/web
# optimum, for tests/test_runtimes.py, in an environment of its own (requirements-optimum.txt says why).
OPTIMUM_VENV ?= .venv-optimum
OPTIMUM_PIP ?= $(OPTIMUM_VENV)/bin/python -m pip install --quiet

# make serve MODEL=DIR serves another model folder; make model DATA=FILE trains one on your text.
MODEL ?= models/chargpt
DATA ?=
RUN ?= runs/$(basename $(notdir $(DATA)))
MINUTES ?= 10
TRAIN_FLAGS ?=
EXPORT_FLAGS ?=

.PHONY: serve model test lint web clean-venv

# The web app alone needs only requirements.txt (what a hosted Space installs).
$(VENV)/.app-installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	touch $@

# exec: the server is make's own child (no shell between), and --exit-with-parent stops it
# when make ends, however make is stopped (kill PID, kill -9 PID, Ctrl-C).
serve: $(VENV)/.app-installed
	exec $(PY) -m webapp --model "$(MODEL)" --exit-with-parent

$(VENV)/.train-installed: requirements.txt requirements-train.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -r requirements.txt -r requirements-train.txt
	touch $(VENV)/.app-installed $@

# Your own text to a model folder the pages serve: `quick` (the shipped recipe) for MINUTES
# minutes, then the checkpoint with the lower whole-split loss exported to RUN/model/.
model: $(VENV)/.train-installed
	@test -n "$(DATA)" || { echo "make model: name your text file: make model DATA=mine.txt" >&2; exit 2; }
	$(PY) -m train --preset quick --time-budget $(MINUTES) --data "$(DATA)" --out "$(RUN)" $(TRAIN_FLAGS)
	$(PY) -m export "$(RUN)" --lower-loss --out "$(RUN)/model/" $(EXPORT_FLAGS)
	@echo "Serve it:  make serve MODEL=$(RUN)/model   (or: python -m webapp --model $(RUN)/model)"

$(VENV)/.dev-installed: requirements.txt requirements-train.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -r requirements-dev.txt
	touch $(VENV)/.app-installed $(VENV)/.train-installed $@

$(OPTIMUM_VENV)/.installed: requirements-optimum.txt
	$(PYTHON) -m venv $(OPTIMUM_VENV)
	$(OPTIMUM_PIP) $(TORCH)
	$(OPTIMUM_PIP) -r requirements-optimum.txt
	touch $@

# The JavaScript side (onnxruntime-web/-node); --ignore-scripts: onnxruntime-node's install
# script downloads extra binaries, and its CPU binaries ship in the package anyway.
$(WEB)/node_modules/.installed: $(WEB)/package-lock.json
	cd $(WEB) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

# The static site (webapp/web/dist): the page, onnxruntime-web and the shipped model.
web: $(WEB)/node_modules/.installed
	cd $(WEB) && node build.mjs

# The JavaScript tests need npm; without it they are skipped (outside CI). Two processes, a
# group of tests each at a time (a file, or one of the README's groups of commands: see
# tests/conftest.py), slowest first; --no-loadscope-reorder keeps that order.
test: $(VENV)/.dev-installed $(OPTIMUM_VENV)/.installed $(if $(shell command -v npm),$(WEB)/node_modules/.installed)
	$(PY) -m pytest -n 2 --dist loadgroup --no-loadscope-reorder

# The Python code's lint and format (ruff, rules in pyproject.toml) and the JavaScript's format
# (prettier, pinned in webapp/web/package.json); `ruff format .` and `npm run format` fix them.
lint: $(VENV)/.dev-installed $(WEB)/node_modules/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd $(WEB) && npm run --silent format:check

clean-venv:
	rm -rf $(VENV) $(OPTIMUM_VENV)
