# Two-command workflow: `make demo`, `make test`. Everything else is bootstrapped.
#
# bootstrap is idempotent and cheap once done: each venv (.venv, and .venv-ommx3 with
# OMMX 3.0.0b7 plus this package for the runtime interop tests) is (re)installed only
# when pyproject.toml is newer than its stamp, and apt only runs when a required
# command is missing.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON3 ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
OMMX3_VENV := .venv-ommx3
OMMX3_VERSION := 3.0.0b7
PROJECT_STAMP := $(VENV)/.bootstrap-project.stamp
OMMX3_STAMP := $(OMMX3_VENV)/.bootstrap-ommx3-ours.stamp
# /usr/bin/time (GNU time) gives the benchmarks an exact per-child peak RSS.
# chromium renders the HTML report in the browser test (headless: DOM and a screenshot).
APT_COMMANDS := skopeo docker-registry htpasswd strace /usr/bin/time chromium
APT_PACKAGES := skopeo docker-registry apache2-utils strace time chromium
ARGS ?=

export OMMX3_PYTHON := $(CURDIR)/$(OMMX3_VENV)/bin/python

.PHONY: bootstrap _bootstrap system-packages demo test stress bench lint clean

# flock on the Makefile serialises concurrent `make` runs in one checkout, so two
# shells never pip-install into the same venv at once.
bootstrap:
	@flock Makefile $(MAKE) --no-print-directory _bootstrap

_bootstrap: system-packages $(PROJECT_STAMP) $(OMMX3_STAMP)

system-packages:
	@missing=""; \
	for c in $(APT_COMMANDS); do command -v "$$c" >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [[ -z "$$missing" ]]; then exit 0; fi; \
	if [[ "$$(id -u)" != 0 ]]; then \
	  echo "bootstrap: missing commands:$$missing"; \
	  echo "bootstrap: not root; please run: sudo apt-get update && sudo apt-get install -y $(APT_PACKAGES)"; \
	  exit 0; \
	fi; \
	echo "bootstrap: installing system packages (missing:$$missing)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq; \
	apt-get install -y -qq $(APT_PACKAGES) >/dev/null

$(VENV_PY):
	$(PYTHON3) -m venv $(VENV)

$(PROJECT_STAMP): pyproject.toml | $(VENV_PY)
	@echo "bootstrap: pip install -e '.[test]' into $(VENV)"
	$(VENV_PY) -m pip install -q -e '.[test]'
	@touch $@

$(OMMX3_VENV)/bin/python:
	$(PYTHON3) -m venv $(OMMX3_VENV)

$(OMMX3_STAMP): pyproject.toml | $(OMMX3_VENV)/bin/python
	@echo "bootstrap: pip install ommx==$(OMMX3_VERSION) ommx-openjij-adapter==$(OMMX3_VERSION) ommx-highs-adapter==$(OMMX3_VERSION) + our runtime deps into $(OMMX3_VENV)"
	@# The adapter must be pinned too: pip ignores its pre-releases otherwise and the
	@# only stable adapters require ommx 2.x (ResolutionImpossible). Our own runtime
	@# deps (pyproject minus ommx, plus the trace extra) resolve in the same pip call,
	@# so they can never move OMMX 3's pins.
	@ours="$$($(OMMX3_VENV)/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["trace"] if not d.startswith("ommx")))')"; \
	mapfile -t deps <<< "$$ours"; \
	$(OMMX3_VENV)/bin/python -m pip install -q 'ommx==$(OMMX3_VERSION)' 'ommx-openjij-adapter==$(OMMX3_VERSION)' 'ommx-highs-adapter==$(OMMX3_VERSION)' "$${deps[@]}" \
	  || { echo "bootstrap: FAILED to install ommx==$(OMMX3_VERSION) into $(OMMX3_VENV)" >&2; exit 1; }
	@# Our package itself, without its deps: its `ommx>=2.9,<4` pin is already met by 3.0.0b7.
	@$(OMMX3_VENV)/bin/python -m pip install -q --no-deps -e . \
	  || { echo "bootstrap: FAILED to install ommx-experiment (editable) into $(OMMX3_VENV)" >&2; exit 1; }
	@$(OMMX3_VENV)/bin/python -c 'import importlib.metadata as m, ommx.experiment, ommx_experiment; v = m.version("ommx"); assert v == "$(OMMX3_VERSION)", f"side venv has ommx {v}, expected $(OMMX3_VERSION)"'
	@rm -f $(OMMX3_VENV)/.bootstrap-ommx3*.stamp
	@touch $@

demo: bootstrap
	$(VENV_PY) -m ommx_experiment.cli.demo

# pytest exits 5 when it collected nothing; that must fail the build, not pass it.
define run_pytest
	@rc=0; $(VENV_PY) -m pytest -q $(1) $(ARGS) || rc=$$?; \
	if [[ $$rc == 5 ]]; then echo "make: pytest collected no tests; failing" >&2; fi; \
	exit $$rc
endef

test: bootstrap
	$(call run_pytest,-m "not stress")

stress: bootstrap
	$(call run_pytest,-m stress)

bench: bootstrap
	@$(VENV_PY) -c 'import matplotlib' 2>/dev/null || $(VENV_PY) -m pip install -q -e '.[bench]'
	$(VENV_PY) bench/run_all.py $(ARGS)

# Static checks (config in pyproject.toml); not part of `test`.
lint: bootstrap
	$(VENV_PY) -m mypy src/ommx_experiment
	$(VENV_PY) -m ruff check src

clean:
	rm -rf $(VENV) $(OMMX3_VENV) .pytest_cache .hypothesis src/*.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
