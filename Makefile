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
	  /^[A-Z_]+ \?=/ && desc != "" { split($$0, v, / \?= ?/); \
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
