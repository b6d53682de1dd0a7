# Each target sets up what it needs in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# PyTorch as your platform gets it; e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch

WEB := webapp/web

.PHONY: serve test web clean-venv

# The web app alone needs only requirements.txt (what a hosted Space installs).
$(VENV)/.app-installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

serve: $(VENV)/.app-installed
	$(PY) -m webapp

$(VENV)/.dev-installed: requirements.txt requirements-train.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.app-installed $@

# The JavaScript side (onnxruntime-web/-node); --ignore-scripts: onnxruntime-node's install
# script downloads extra binaries, and its CPU binaries ship in the package anyway.
$(WEB)/node_modules/.installed: $(WEB)/package-lock.json
	cd $(WEB) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

# The static site (webapp/web/dist): the page, onnxruntime-web and the shipped model.
web: $(WEB)/node_modules/.installed
	cd $(WEB) && node build.mjs

# The JavaScript tests need npm; without it they are skipped (outside CI).
test: $(VENV)/.dev-installed $(if $(shell command -v npm),$(WEB)/node_modules/.installed)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
