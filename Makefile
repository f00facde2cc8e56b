# py-serving-bench — Python's two serving models under the same load.
# `make` lists every target and variable. Each target is described by its `##` comment.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

SERVERS_ALL := stdlib-style async-style

##@ Variables (override as NAME=value)
## Python 3.11+ that creates the virtual environment
PYTHON ?= python3
## repo-local virtual environment, created when missing
VENV ?= .venv
## server for `serve`: stdlib-style or async-style
SERVER ?= async-style
## port for `serve`
PORT ?= 8080
## worker processes for `serve` (empty: the CPUs this process may use)
WORKERS ?=

BIN := $(VENV)/bin
LOCKS := servers/stdlib-style/requirements.lock servers/async-style/requirements.lock requirements-dev.lock

# The command each image runs, from inside its server folder (the Dockerfiles' ENTRYPOINT runs
# the same; tests/test_makefile.py holds the two together).
SERVE_stdlib-style := gunicorn --config gunicorn.conf.py
SERVE_async-style := python granian_conf.py

##@ Local loop

.PHONY: serve
serve: $(VENV)/.installed ## run one server in the foreground, exactly as its image does
	@case "$(SERVER)" in stdlib-style|async-style) ;; *) \
	  echo "SERVER must be stdlib-style or async-style, got '$(SERVER)': try make serve SERVER=async-style." >&2; exit 2;; esac
	cd servers/$(SERVER) && PATH="$(abspath $(BIN)):$$PATH" PORT=$(PORT) WORKERS=$(WORKERS) exec $(SERVE_$(SERVER))

##@ Benchmark (this machine, no cluster)

## rounds per server in `bench-local`, servers alternating A B A B (empty: quick 2, standard 3, open 2)
ROUNDS ?=
## CPUs `bench-local` pins the servers to, e.g. 0 or 0-3 (empty: the lower half of this machine's)
SERVER_CPUS ?=
## CPUs `bench-local` pins k6 to, e.g. 1 (empty: the ones the servers do not get)
K6_CPUS ?=
## baseline run for `compare`: a run id in results/ or a run folder
A ?=
## run `compare` holds against A: a run id in results/ or a run folder
B ?=

# PROFILE and RUN_ID are shared with `bench`; bench-local's own profile default is quick.
BENCH_LOCAL_PROFILE = $(if $(filter command line environment environment override,$(origin PROFILE)),$(PROFILE),quick)

.PHONY: bench-local
bench-local: $(VENV)/.installed ## benchmark the servers here, pinned apart from k6 (PROFILE quick|standard|open, default quick): results/<RUN_ID>/
	$(BIN)/python -m bench.local --servers "$(SERVERS)" --profile "$(BENCH_LOCAL_PROFILE)" --rounds "$(ROUNDS)" \
	  --workers "$(WORKERS)" --server-cpus "$(SERVER_CPUS)" --k6-cpus "$(K6_CPUS)" --run-id "$(RUN_ID)"

.PHONY: compare
compare: $(VENV)/.installed ## compare two runs per server: P50, P99 and requests, and the change in percent (A, B)
	@$(BIN)/python -m bench.compare "$(A)" "$(B)"

##@ Quality

.PHONY: test
test: $(VENV)/.installed ## run every test (CI runs this)
	$(BIN)/pytest

.PHONY: lock
lock: $(VENV)/.installed ## regenerate the hash-locked requirements from pyproject.toml / requirements-dev.in
	for s in $(SERVERS_ALL); do \
	  $(BIN)/uv pip compile -q servers/$$s/pyproject.toml --generate-hashes --python-version 3.11 --no-header -o servers/$$s/requirements.lock; \
	done
	$(BIN)/uv pip compile -q requirements-dev.in --generate-hashes --python-version 3.11 --no-header -o requirements-dev.lock

##@ Help

.PHONY: help
help: ## list targets and variables
	@awk 'BEGIN { FS = ":.*## " } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5); next } \
	  /^## / { desc = substr($$0, 4); next } \
	  /^[A-Z][A-Z0-9_]* \?=/ && desc != "" { split($$0, v, / \?= ?/); \
	    printf "  \033[33m%-16s\033[0m %s (default: %s)\n", v[1], desc, (v[2] == "" ? "empty" : v[2]); desc = ""; next } \
	  /^[a-zA-Z0-9_-]+:.*## / { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2; next } \
	  { desc = "" }' \
	  $(MAKEFILE_LIST)

# The virtual environment: rebuilt when a lock file changes.
$(VENV)/.installed: $(LOCKS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "Python 3.11 or newer is needed as '$(PYTHON)': install it, or run make with PYTHON=/path/to/python3.11." >&2; exit 2; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps $(addprefix -r ,$(LOCKS))
	@touch $@
