# Everything a user runs. Each target does its own set-up (venvs, Debian packages) on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

CONFIG ?= endpoints.toml
REPS ?=
STAGES ?=
LABEL ?= compare
RUNS ?=

.PHONY: help setup system-deps vllm-env test bench loadtest capacity ui report demo servers exporter gpu-check image clean

help:
	@echo "make demo       run the whole comparison on two tiny CPU-served vLLM models"
	@echo "make test       run the test suite (installs what it needs)"
	@echo "make loadtest   sweep the endpoints in \$$CONFIG headless, then build the report"
	@echo "make capacity SLO=\"ttft_p99<=0.5,error_rate<=0.01\"   each endpoint's capacity under the SLOs, compared"
	@echo "make ui         the Locust web UI on the same user classes"
	@echo "make report RUNS=results/...   rebuild a report"
	@echo "make bench      load-generator speed/accuracy, wire truth (packet capture), exporter and report benchmarks"
	@echo "make exporter   run the GPU/process exporter"
	@echo "make servers    start the two local tiny vLLM servers (with exporters) until Ctrl-C"
	@echo "make gpu-check  exporter check on a real NVIDIA GPU under a torch matmul load"
	@echo "make image      build the container image llm-loadsuite:VERSION and :latest (needs docker)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (set PYTHON=python3.11)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

system-deps:
	@bash deploy/install_system_deps.sh

vllm-env:
	@bash deploy/local/setup_vllm.sh

test: setup system-deps vllm-env
	$(PY) -m pytest -q $(ARGS)

demo: setup
	$(PY) -m deploy.local.demo $(ARGS)

servers: setup
	$(PY) -m deploy.local.servers up $(ARGS)

gpu-check: setup
	$(PY) -m exporters.gpu_check $(ARGS)

bench: setup system-deps
	$(PY) -m bench

loadtest: setup
	$(PY) -m locustfiles.campaign --endpoints-file $(CONFIG) --label $(LABEL) \
	  $(if $(REPS),--repetitions $(REPS)) $(if $(STAGES),--stages $(STAGES)) \
	  $(if $(A_URL),--a-url $(A_URL)) $(if $(B_URL),--b-url $(B_URL)) \
	  $(if $(A_MODEL),--a-model $(A_MODEL)) $(if $(B_MODEL),--b-model $(B_MODEL)) $(ARGS)

# the highest load each endpoint sustains within SLO (docs/capacity.md)
capacity: setup
	@test -n '$(SLO)' || (echo 'give the SLOs: make capacity SLO="ttft_p99<=0.5,tpot_p99<=0.05,error_rate<=0.01"' && exit 2)
	$(PY) -m locustfiles.campaign --capacity --slo '$(SLO)' --endpoints-file $(CONFIG) --label $(LABEL) \
	  $(if $(REPS),--repetitions $(REPS)) \
	  $(if $(A_URL),--a-url $(A_URL)) $(if $(B_URL),--b-url $(B_URL)) \
	  $(if $(A_MODEL),--a-model $(A_MODEL)) $(if $(B_MODEL),--b-model $(B_MODEL)) $(ARGS)

ui: setup
	LOCUST_ENDPOINTS_FILE=$(CONFIG) $(VENV)/bin/locust -f locustfiles/users.py --web-host 127.0.0.1 $(ARGS)

report: setup
	@test -n "$(RUNS)" || (echo 'give the run directories: make report RUNS="results/..."' && exit 2)
	$(PY) -m analysis $(RUNS) $(ARGS)

exporter: setup
	$(PY) -m exporters $(ARGS)

# The container image (Dockerfile; docs/several-machines.md). VERSION: pyproject.toml's version.
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	@command -v docker >/dev/null 2>&1 || { echo "make image needs docker, which is not installed here (docs/several-machines.md)" >&2; exit 2; }
	@docker info >/dev/null 2>&1 || { echo "make image: docker is installed but cannot reach its daemon (start it, or set DOCKER_HOST)" >&2; exit 2; }
	docker build -t llm-loadsuite:$(VERSION) -t llm-loadsuite:latest .

clean:
	rm -rf $(VENV) .venv-vllm .cache .pytest_cache
