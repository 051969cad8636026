# gpulab: `make run` starts the hub, `make test` runs the whole suite. Both set everything up.
SHELL := /bin/bash
# The hub's environment must be runnable by the system users servers run as: use the system
# Python 3.11 (a pyenv Python under /root is not).
PYTHON ?= $(shell for p in /usr/bin/python3.11 python3.11 python3; do command -v $$p >/dev/null && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt setup.cfg | md5sum | cut -c1-8)
CHP := node_modules/.bin/configurable-http-proxy
GPULAB_CONFIG ?= config/gpulab.yaml
export GPULAB_CONFIG

.PHONY: run test install bench clean help helm-values images images-ci bench-docker envs gpu-check bench-envs bench-scale

help:
	@echo "make run    set up and start the hub (http://127.0.0.1:8000)"
	@echo "make test   set up and run the whole test suite"
	@echo "make bench  run the benchmarks in benchmarks/ (prints ratios)"
	@echo "make helm-values  regenerate helm-values/values.yaml (Kubernetes, z2jh chart)"
	@echo "make envs   build the profiles' environments for the local backend (PROFILES=pytorch,vscode for some)"
	@echo "make images build the profile images (docker backend; IMAGES=base,pytorch for some)"
	@echo "make gpu-check  the real-hardware check on a GPU machine (< 8 min)"

$(STAMP):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "gpulab needs Python 3.11, found " + sys.version' \
	  || { echo "Install Python 3.11 (Debian: apt-get install python3 python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# setuptools' one informational note on editable installs ("be careful with folders named
	@# like your package") is the only thing it would print: silence just that one
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -r requirements.txt -e .
	@# jsonschema imports rfc3987-syntax when it is there (an optional checker of the 'iri' format,
	@# pulled in by jupyter-events' jsonschema[format-nongpl]), and that builds a parser at import:
	@# 1.5-2.5 s of every start of the hub and of JupyterLab here. Nothing validates IRIs; the
	@# profiles' environments leave it out too (hub_plugins/envs/install.py).
	$(BIN)/pip uninstall -y -q rfc3987-syntax
	rm -f $(VENV)/.installed-* && touch $@

$(CHP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# A server's lifeline in C (hub_plugins/lifeline.c): each server's start then costs no Python
# interpreter's start. Without a C compiler the hub runs lifeline.py instead, as it does for a
# binary older than its source.
CC ?= cc
LIFELINE_BIN := $(BIN)/gpulab-lifeline
$(LIFELINE_BIN): hub_plugins/lifeline.c $(STAMP)
	@$(CC) -O2 -Wall -Wextra -o $@ $< \
	  || { rm -f $@; echo "note: no C compiler for $<: servers run under lifeline.py (8-12 ms more CPU per start)"; }

install: $(STAMP) $(CHP) $(LIFELINE_BIN)

run: install
	@$(BIN)/python -m hub_plugins.settings.welcome
	$(BIN)/jupyterhub -f config/jupyterhub_config.py

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The profiles' environments (local backend), from their pins in profiles/*.yaml, into
# environments.dir of gpulab.yaml. Unchanged pins are not rebuilt. `make run` does this in the
# background for missing ones (the hub's envs service); this is the same, in the foreground.
PROFILES ?=
envs: install
	$(BIN)/python -m hub_plugins.envs $(if $(PROFILES),--profiles $(PROFILES))

# The real-hardware check (tools/gpu_check.py): NVML vs nvidia-smi, a real hub spawning PyTorch and
# TensorFlow on a GPU, the culler seeing a matmul loop, MIG. Without a GPU it runs its CPU path.
gpu-check: install
	$(BIN)/python tools/gpu_check.py $(GPU_CHECK_ARGS)

# z2jh Helm values, generated from profiles/*.yaml and helm-values/gpulab.yaml (a test checks
# that the committed file is up to date)
helm-values: install
	$(BIN)/python -m hub_plugins.spawners.kubernetes.helm

bench: install
	$(BIN)/python benchmarks/allocator.py
	$(BIN)/python benchmarks/spawn_overhead.py
	$(BIN)/python benchmarks/startstop.py
	$(BIN)/python benchmarks/trace_utilisation.py
	$(BIN)/python benchmarks/scale.py

# Profile images for the Docker backend, tags from profiles/*.yaml (images/build.py --help).
# images-ci: no registry; the base comes from a debootstrap rootfs (root + debootstrap needed).
IMAGES ?=
images: install
	$(BIN)/python images/build.py $(if $(IMAGES),--only $(IMAGES))

images-ci: install
	$(BIN)/python images/build.py --rootfs $(if $(IMAGES),--only $(IMAGES))

# a lab's scale: 200 people, 500 running servers, a year of usage (about 10 minutes)
bench-scale: install
	$(BIN)/python benchmarks/scale.py

bench-docker: install
	$(BIN)/python benchmarks/docker_spawn.py

# click-to-ready of the PyTorch profile vs stock JupyterHub (needs `make envs PROFILES=pytorch`)
bench-envs: install
	$(BIN)/python benchmarks/env_spawn.py

clean:
	rm -rf $(VENV) node_modules config/state .pytest_cache
