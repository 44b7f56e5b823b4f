# Common commands. `make demo` runs the main job; `make test` runs every test (CI runs it too).
SHELL := /bin/bash
# The repo root holds a folder named `operator` (mapped to hetsched.operator): never let `python -m`
# put the current directory first on sys.path, or it would shadow the standard library's operator.
export PYTHONSAFEPATH := 1
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HETSCHED := $(VENV)/bin/hetsched

.PHONY: help venv lint typecheck test test-unit test-integration test-engines controlplane debs engines \
        demo demo-down cluster-up cluster-down cluster-status bench bench-serving bench-cpu crds figures calibrate clean audit

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with hetsched (editable) and the dev tools

lint: venv ## ruff and mypy (strict on scheduler/)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check scheduler operator tests benchmarks
	@# operator/ and scheduler/ are mapped into the hetsched package; mirror that mapping for mypy.
	mkdir -p build/typecheck/hetsched
	ln -sfn ../../../scheduler build/typecheck/hetsched/scheduler
	ln -sfn ../../../operator build/typecheck/hetsched/operator
	MYPYPATH=build/typecheck $(VENV)/bin/mypy -p hetsched.scheduler -p hetsched.operator

# Dependency audit (docs/security.md): pip-audit when its service answers, else PyPI's per-project
# JSON (scripts/audit_deps.py: audits the distributions installed at their latest release).
audit: venv ## audit the venv's dependencies for known vulnerabilities (pip-audit, else the fallback)
	@mkdir -p build
	@if $(VENV)/bin/pip-audit --strict --skip-editable --progress-spinner off >build/pip-audit.log 2>&1; then \
	  cat build/pip-audit.log; \
	elif grep -qE "^Found [0-9]+ known vulnerabilit" build/pip-audit.log; then \
	  cat build/pip-audit.log; exit 1; \
	else \
	  echo "pip-audit could not audit: $$(tail -n 1 build/pip-audit.log)"; \
	  echo "falling back to scripts/audit_deps.py (PyPI per-project JSON)"; \
	  $(PY) scripts/audit_deps.py; \
	fi

test-unit: venv ## fast tests, no cluster, no engines
	$(PY) -m pytest -m "not integration and not engines" -q

# Everything the tests need, installed when missing: Debian packages, the venv, the control plane's
# binaries and the engine environment (each a fast no-op once present). Order matters: debs first
# (python3-venv).
test: debs venv controlplane engines ## every test: unit, integration (local control plane), real engines
	$(PY) -m pytest -q

test-integration: venv controlplane engines ## integration tests only (local control plane, real engines)
	$(PY) -m pytest -m "integration or engines" -q

test-engines: venv controlplane engines ## the real-engine tests only (vLLM CPU engines, vllm-router)
	$(PY) -m pytest -m engines -q

debs: ## Debian packages the tests need (prometheus, chromium, python3-venv, g++, libnuma1), via apt-get when missing
	scripts/debian-deps.sh

# Real serving (docs/serving.md, "Tested on real engines"): vLLM CPU + NIXL + vllm-router, pinned by scripts/engine-env.lock.txt.
engines: ## the engine environment in ~/.cache/hetsched/engines (about 6 minutes the first time, then reused)
	scripts/engine-env.sh >/dev/null

# Local control plane (docs/local-cluster.md). State: $HETSCHED_CLUSTER_DIR or ~/.local/state/hetsched/cluster.
POOLS ?= examples/pools/demo.yaml

controlplane: venv ## build (or reuse) the pinned kube-apiserver, etcd, KWOK, kubectl, helm in ~/.cache/hetsched
	$(HETSCHED) cluster build

cluster-up: venv ## start the local cluster with the pools of $(POOLS)
	$(HETSCHED) cluster up --pools $(POOLS)

cluster-down: venv ## stop the local cluster and remove its state
	$(HETSCHED) cluster down

cluster-status: venv ## components (pid, port, memory) and nodes Ready per pool
	$(HETSCHED) cluster status

calibrate: venv ## fit the efficiencies to benchmarks/data/serving-measurements.csv and the CPU runs of benchmarks/data/cpu/ (writes scheduler/estimator/data/efficiency.json)
	$(HETSCHED) calibrate --write

bench: venv ## benchmarks (print figures); bench_serving runs real engines: make bench-serving
	@for b in benchmarks/bench_*.py; do [ $$b = benchmarks/bench_serving.py ] && continue; echo "== $$b"; $(PY) $$b || exit 1; done

bench-serving: venv controlplane engines ## TTFT/TPOT through the P/D router vs colocated, real vLLM CPU engines (minutes)
	$(PY) benchmarks/bench_serving.py

# The CPU serving campaign (benchmarks/data/cpu/README.md): probe this machine, serve random-weight
# models with vLLM CPU (the engine environment of engine-env.sh), write benchmarks/data/cpu/. About
# an hour on 2 cores; not part of `make test` (its quick variant is: tests/serving/test_bench_cpu.py).
BENCH_CPU_ARGS ?=
bench-cpu: venv ## measure vLLM CPU serving on this machine into benchmarks/data/cpu/ (37 min on 2 cores; then make calibrate)
	$(PY) benchmarks/cpu_serving.py $(BENCH_CPU_ARGS)

# The figures the README shows (docs/figures/NAME.png and .svg), from the estimator and the planner.
FIGURES_DIR ?= docs/figures
figures: venv ## regenerate the README figures into docs/figures/ (roofline, regime map, paper Figs. 1-4, placement)
	$(HETSCHED) plot roofline --out $(FIGURES_DIR) --model llama-3.1-8b --agent coding --batch 32 \
	    --hardware b200,h100-sxm,a100-80gb,l4,xeon-6980p
	$(HETSCHED) plot regime-map --out $(FIGURES_DIR)
	$(HETSCHED) plot agents --out $(FIGURES_DIR)
	$(HETSCHED) plot attention --out $(FIGURES_DIR)
	$(HETSCHED) plot moe --out $(FIGURES_DIR)
	$(HETSCHED) plot placement --out $(FIGURES_DIR) --pools examples/pools/demo.yaml examples/workloads/*.yaml

# Operator (docs/operator.md).
crds: venv ## regenerate crds/*.yaml from scheduler/spec.py (structural OpenAPI + CEL rules)
	$(HETSCHED) crds
	$(HETSCHED) crds --out charts/hetsched/crds

DEMO_PORT ?= 8080
demo: venv controlplane ## local cluster + CRDs + examples/workloads + operator in the background; prints the placement
	$(PY) -m hetsched.operator.devcluster.demo up --port $(DEMO_PORT)

demo-down: venv ## stop the demo operator and the local cluster
	$(PY) -m hetsched.operator.devcluster.demo down

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
