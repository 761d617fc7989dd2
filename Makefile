# The README's two commands: `make demo` and `make test`. Each sets up what it
# needs on a fresh Debian machine (as root) and is fast when nothing changed.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CASA_PKGS := casatools==6.7.0.31 casatasks==6.7.0.31 casadata six
CASA_CONFIG := $(VENV)/casasiteconfig.py
PYTEST_ARGS ?=
DEMO_ARGS ?= --headless

.PHONY: setup system demo test bench clean

setup: system $(VENV)/.installed $(CASA_CONFIG)

system:
	@bash scripts/install-system.sh

$(VENV)/.installed: pyproject.toml
	@bash scripts/make-venv.sh $(VENV) "$(CASA_PKGS)"
	@touch $@

$(CASA_CONFIG): $(VENV)/.installed remote/casa_site_config.py
	@$(PY) remote/casa_site_config.py $@

demo: setup
	CASASITECONFIG=$(abspath $(CASA_CONFIG)) $(VENV)/bin/ari demo $(DEMO_ARGS)

test: setup
	CASASITECONFIG=$(abspath $(CASA_CONFIG)) $(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	CASASITECONFIG=$(abspath $(CASA_CONFIG)) $(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
