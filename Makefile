# Each target sets up what it needs in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# PyTorch as your platform gets it; e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch

.PHONY: serve test clean-venv

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

test: $(VENV)/.dev-installed
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
