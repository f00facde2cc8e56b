# py-serving-bench — Python's two serving models under the same load.
# `make` lists every target and variable. Each target is described by its `##` comment.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Pinned tool, chart and image versions: the one place they are written.
include versions.env

# Every server is a folder with a server.yaml (servers/registry.py reads it; its keys are listed there).
SERVERS_ALL := $(patsubst servers/%/server.yaml,%,$(wildcard servers/*/server.yaml))

##@ Variables (override as NAME=value)
## Python 3.11+ that creates the virtual environment
PYTHON ?= python3
## repo-local virtual environment, created when missing
VENV ?= .venv
## server for `serve` and `memory`: one of the folders under servers/ (`make help` lists them)
SERVER ?= async-style
## port for `serve`
PORT ?= 8080
## worker processes for `serve` (empty: the CPUs this process may use)
WORKERS ?=

BIN := $(VENV)/bin
# The Python servers' locks and the tools': the virtual environment is rebuilt when one changes.
LOCKS := $(wildcard servers/*/requirements.lock) requirements-dev.lock
# servers/registry.py for recipes: the servers a SERVERS value names, a field of one server.
REGISTRY_PY = $(BIN)/python -m servers.registry

##@ Local loop

.PHONY: serve
serve: $(VENV)/.installed ## run one server in the foreground, exactly as its image does (its build step first, if it has one)
	@PATH="$(abspath $(BIN)):$$PATH" exec $(BIN)/python -m servers.serve "$(SERVER)" --port "$(PORT)" --workers "$(WORKERS)"

##@ Images

## tag of the images `images` builds: <server>:<IMAGE_TAG>
IMAGE_TAG ?= dev

# Each image's base comes from servers/base/base-image.sh, by its server.yaml image.base:
# PYTHON_BASE or DEBIAN_BASE (versions.env) when a registry answers, else a local Debian bookworm
# base it builds once. --network host: this project's CI engine runs without a bridge network.
.PHONY: images
images: $(VENV)/.installed ## build every server's image, <server>:IMAGE_TAG (no registry reachable: on a local Debian base, see docs/images.md)
	@for s in $(SERVERS_ALL); do \
	  kind=$$($(REGISTRY_PY) field $$s image.base); \
	  case $$kind in python) public=$(PYTHON_BASE);; *) public=$(DEBIAN_BASE);; esac; \
	  base=$$(servers/base/base-image.sh $$kind $$public); \
	  echo "Building $$s:$(IMAGE_TAG) on $$base."; \
	  docker build --network host --build-arg BASE=$$base -t $$s:$(IMAGE_TAG) servers/$$s; \
	done

##@ Cluster (kind for the local loop, Hetzner for numbers)

## registry `images-push` pushes to and `deploy` pulls from (kind: the ctlptl registry)
REGISTRY ?= localhost:5005
## image tag `images-push` pushes and `deploy` deploys, for every server; <SERVER>_TAG sets one server's, e.g. ASYNC_STYLE_TAG=v1.2
TAG ?= $(GIT_DESCRIBE)
## kustomize overlay for `deploy`: kind or hetzner (empty: kind on a kind-* context, else hetzner)
OVERLAY ?=
## servers that `bench`, `bench-local` and `deploy` run and `images-push` pushes: names, stand-ins (the Python servers) or all
SERVERS ?= stand-ins
## run id of `bench`, `bench-local` and `results`; results go to results/<RUN_ID>/ (empty: the UTC time now)
RUN_ID ?=
## k6 profile for `bench`: smoke, quick, standard, open or seed; `bench-local`: quick (its default), standard, open or smoke
PROFILE ?= seed
## k6 runner pods per server in `bench`; k6 splits the load between them
PARALLELISM ?= 1
## how long `bench` waits for the TestRuns to finish (Go duration: 45m, 1h30m)
BENCH_TIMEOUT ?= 45m
## arrival rate in requests per second for `bench PROFILE=open` (required there)
RATE ?=
## how long `bench PROFILE=open` runs, a k6 duration (empty: 60s)
DURATION ?=
## CIDRs allowed to reach the Hetzner cluster's SSH and API, e.g. your public IP
ALLOWED_NETWORKS ?=
## where `hetzner-up` writes the Hetzner cluster's kubeconfig (then: export KUBECONFIG=<it>)
HETZNER_KUBECONFIG ?= .build/hetzner/kubeconfig
## local port `grafana` forwards to Grafana
GRAFANA_PORT ?= 3000

GIT_DESCRIBE = $(shell git describe --always --dirty 2>/dev/null || echo dev)
# A server's tag: <SERVER>_TAG (async-style -> ASYNC_STYLE_TAG) when set, else TAG.
tag_of = $(or $($(subst -,_,$(shell echo $(1) | tr a-z A-Z))_TAG),$(TAG))
HETZNER_CONFIG := .build/hetzner/cluster.yaml
CONTEXT = $(shell kubectl config current-context 2>/dev/null)
KUSTOMIZATIONS = $(patsubst %/kustomization.yaml,%,$(wildcard k8s/overlays/*/kustomization.yaml)) k6
OVERLAY_USED = $(or $(OVERLAY),$(if $(filter kind-%,$(CONTEXT)),kind,hetzner))

# A missing tool stops the target with one line: what to install, which version, from where.
HOW_docker := Docker from https://docs.docker.com/engine/install/
HOW_kubectl := kubectl from https://kubernetes.io/docs/tasks/tools/
HOW_helm := Helm $(HELM_VERSION) from https://helm.sh/docs/intro/install/
HOW_kind := kind $(KIND_VERSION) from https://kind.sigs.k8s.io/docs/user/quick-start/\#installation
HOW_ctlptl := ctlptl $(CTLPTL_VERSION) from https://github.com/tilt-dev/ctlptl\#how-do-i-install-it
HOW_tilt := Tilt $(TILT_VERSION) from https://docs.tilt.dev/install.html
HOW_hetzner-k3s := hetzner-k3s $(HETZNER_K3S_VERSION) from https://github.com/vitobotta/hetzner-k3s/blob/main/docs/Installation.md
need = $(foreach t,$(1),command -v $(t) >/dev/null || { echo "$(t) is not installed: install $(HOW_$(t))." >&2; exit 127; };)
# The servers SERVERS names, or one line saying what it may name (servers/registry.py select).
selected = $$($(REGISTRY_PY) select "$(SERVERS)")
token_set = [ -n "$${HCLOUD_TOKEN:-}" ] || { \
  echo "HCLOUD_TOKEN is not set: create a read/write API token in the Hetzner Cloud console (Security > API tokens) and export HCLOUD_TOKEN." >&2; exit 2; }
reachable = kubectl get --raw=/readyz --request-timeout=10s >/dev/null 2>&1 || { \
  echo "No Kubernetes cluster answers at context '$$(kubectl config current-context 2>/dev/null)'." >&2; \
  echo "Start one with make kind-up (local) or make hetzner-up, or point KUBECONFIG at one (Hetzner: export KUBECONFIG=$(abspath $(HETZNER_KUBECONFIG)))." >&2; exit 1; }

.PHONY: kind-up
kind-up: $(VENV)/.installed ## create the local kind cluster (node pools as on Hetzner) and its registry on localhost:5005
	@$(call need,docker kind ctlptl)
	$(BIN)/python iac/render_cluster.py kind | ctlptl apply -f -

.PHONY: dev
dev: ## the local loop: create the kind cluster if it is missing, then start Tilt (Ctrl-C stops Tilt, not the cluster)
	@$(call need,tilt)
	@$(MAKE) kind-up
	tilt up

.PHONY: kind-down
kind-down: ## delete the kind cluster and its registry (nothing to do if they are gone)
	@$(call need,ctlptl)
	ctlptl delete -f ctlptl.yaml --ignore-not-found

.PHONY: images-push
images-push: images ## tag the images of SERVERS (TAG, <SERVER>_TAG) and push them to REGISTRY
	@$(call need,docker)
	@servers=$(selected); \
	$(foreach s,$(SERVERS_ALL),if [[ " $$servers " == *" $(s) "* ]]; then $(call push,$(s)); fi;)

push = echo "Pushing $(REGISTRY)/$(1):$(call tag_of,$(1))."; \
  docker tag $(1):$(IMAGE_TAG) $(REGISTRY)/$(1):$(call tag_of,$(1)) && docker push $(REGISTRY)/$(1):$(call tag_of,$(1))

.PHONY: hetzner-up
hetzner-up: ## create the Hetzner cluster, install monitoring and the k6-operator, deploy the servers (HCLOUD_TOKEN, ALLOWED_NETWORKS, REGISTRY)
	@$(token_set)
	@[ -n "$(ALLOWED_NETWORKS)" ] || { echo "ALLOWED_NETWORKS is not set: pass the address you work from, e.g. make hetzner-up ALLOWED_NETWORKS=203.0.113.4/32." >&2; exit 2; }
	@case "$(REGISTRY)" in localhost:*|127.0.0.1:*) \
	  echo "REGISTRY=$(REGISTRY) is not reachable from Hetzner: push with make images-push REGISTRY=ghcr.io/<you> and pass the same REGISTRY here." >&2; exit 2;; esac
	@$(call need,hetzner-k3s kubectl helm)
	@$(MAKE) $(VENV)/.installed
	@mkdir -p $(dir $(HETZNER_CONFIG)) $(dir $(HETZNER_KUBECONFIG))
	$(BIN)/python iac/render_cluster.py hetzner --allowed-networks "$(ALLOWED_NETWORKS)" --kubeconfig $(abspath $(HETZNER_KUBECONFIG)) \
	  --app-nodes "$$($(REGISTRY_PY) select "$(SERVERS)" | wc -w)" > $(HETZNER_CONFIG)
	hetzner-k3s create --config $(HETZNER_CONFIG)
	KUBECONFIG=$(abspath $(HETZNER_KUBECONFIG)) $(MAKE) monitoring deploy OVERLAY=hetzner
	@echo "Hetzner cluster ready. Use it with: export KUBECONFIG=$(abspath $(HETZNER_KUBECONFIG)); then make bench."

.PHONY: monitoring
monitoring: ## install kube-prometheus-stack and the k6-operator (charts pinned in versions.env) in the current context
	@$(call need,kubectl helm)
	@$(reachable)
	@$(MAKE) grafana-secret
	helm upgrade --install kube-prometheus-stack kube-prometheus-stack --repo $(KUBE_PROMETHEUS_STACK_CHART_REPO) \
	  --version $(KUBE_PROMETHEUS_STACK_CHART_VERSION) --namespace monitoring \
	  --values monitoring/kube-prometheus-stack.values.yaml --wait --timeout 15m
	helm upgrade --install k6-operator k6-operator --repo $(K6_OPERATOR_CHART_REPO) \
	  --version $(K6_OPERATOR_CHART_VERSION) --namespace k6-operator --create-namespace \
	  --values monitoring/k6-operator.values.yaml --wait --timeout 5m
	kubectl apply -k dashboards

# The password is generated in a pipe and never reaches argv, a terminal or a file; the Secret
# is created once, so a re-run keeps the password Grafana already uses.
.PHONY: grafana-secret
grafana-secret: $(VENV)/.installed ## create Grafana's admin Secret with a generated password, once (never printed)
	@$(call need,kubectl)
	@kubectl create namespace monitoring --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	@kubectl -n monitoring get secret grafana-admin >/dev/null 2>&1 || { \
	  $(BIN)/python -c 'import secrets, sys; sys.stdout.write(secrets.token_urlsafe(24))' \
	  | kubectl -n monitoring create secret generic grafana-admin --from-literal=admin-user=admin \
	      --from-file=admin-password=/dev/stdin --dry-run=client -o yaml \
	  | kubectl apply -f - >/dev/null && echo "Created the Grafana admin Secret monitoring/grafana-admin."; }

.PHONY: deploy
deploy: $(VENV)/.installed ## deploy every server with the pushed tags, SERVERS with one replica and the rest with none, and wait for them (OVERLAY)
	@$(call need,kubectl)
	@$(reachable)
	$(BIN)/python -m bench.cluster kustomization k8s/overlays/$(OVERLAY_USED) .build/deploy --servers "$(SERVERS)" \
	  $(foreach s,$(SERVERS_ALL),$(s)=$(REGISTRY)/$(s):$(call tag_of,$(s)))
	kubectl apply -k .build/deploy
	for s in $(selected); do kubectl -n py-bench rollout status deployment/$$s --timeout=5m; done

.PHONY: bench
bench: $(VENV)/.installed ## run the k6 TestRuns in the cluster, wait for them, collect results/<RUN_ID>/ and print the tables
	@$(call need,kubectl)
	@servers=$(selected)
	@$(reachable)
	$(BIN)/python -m bench.cluster run --run-id "$(RUN_ID)" --servers "$(SERVERS)" --profile $(PROFILE) \
	  --parallelism $(PARALLELISM) --timeout $(BENCH_TIMEOUT) $(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION))

.PHONY: results
results: $(VENV)/.installed ## collect results/<RUN_ID>/ again from the cluster's Prometheus for a finished `bench` run
	@$(call need,kubectl)
	@[ -n "$(RUN_ID)" ] || { echo "RUN_ID is not set: name the run to collect (a folder in results/), e.g. make results RUN_ID=20261127-120000." >&2; exit 2; }
	@$(reachable)
	$(BIN)/python -m bench.cluster collect --run-id "$(RUN_ID)"

.PHONY: grafana
grafana: ## forward Grafana to http://localhost:GRAFANA_PORT and show how to read its admin password
	@$(call need,kubectl)
	@$(reachable)
	@echo "Grafana: http://localhost:$(GRAFANA_PORT) (user admin; Ctrl-C stops the forward)."
	@echo "Password: kubectl -n monitoring get secret grafana-admin -o jsonpath='{.data.admin-password}' | base64 -d; echo"
	kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana $(GRAFANA_PORT):80

##@ Benchmark (this machine, no cluster)

## rounds per server in `bench-local`, servers alternating A B A B (empty: quick 2, standard 3, open 2)
ROUNDS ?=
## CPUs `bench-local` pins the servers to, e.g. 0 or 0-3 (empty: the lower half of this machine's)
SERVER_CPUS ?=
## CPUs `bench-local` pins k6 to, e.g. 1 (empty: the ones the servers do not get)
K6_CPUS ?=
## cores each server may use in `bench-local`, as a pod's CPU limit: 0.3, 300m or none (empty: 0.25 per k6 CPU)
SERVER_CPU_LIMIT ?=
## `bench-local PLAN=1` prints what the run would do (servers, rounds, CPUs) and exits
PLAN ?=
## baseline run for `compare`: a run id in results/ or a run folder
A ?=
## run `compare` holds against A: a run id in results/ or a run folder
B ?=

# PROFILE and RUN_ID are shared with `bench`; bench-local's own profile default is quick.
BENCH_LOCAL_PROFILE = $(if $(filter command line environment environment override,$(origin PROFILE)),$(PROFILE),quick)

.PHONY: bench-local
bench-local: $(VENV)/.installed ## benchmark the servers here, pinned apart from k6 and CPU-limited (PROFILE quick|standard|open|smoke, default quick): results/<RUN_ID>/
	$(BIN)/python -m bench.local --servers "$(SERVERS)" --profile "$(BENCH_LOCAL_PROFILE)" --rounds "$(ROUNDS)" \
	  --workers "$(WORKERS)" --server-cpus "$(SERVER_CPUS)" --k6-cpus "$(K6_CPUS)" \
	  --server-cpu-limit "$(SERVER_CPU_LIMIT)" --run-id "$(RUN_ID)" $(if $(PLAN),--plan)

.PHONY: wrkcheck
wrkcheck: $(VENV)/.installed ## was k6 the limit? wrk against a bench-local run's servers under its CPU limit (RUN_ID, or the newest run)
	@$(BIN)/python -m bench.wrkcheck "$(RUN_ID)"

.PHONY: compare
compare: $(VENV)/.installed ## compare two runs per server: P50, P99 and requests, and the change in percent (A, B)
	@$(BIN)/python -m bench.compare "$(A)" "$(B)"

## rounds of `perf`, every server alternating with the go-net-http baseline
PERF_ROUNDS ?= 3
## requests `perf` sends each server while sampling its RSS (0: skip that part)
PERF_RSS_REQUESTS ?= 100000

.PHONY: perf
perf: $(VENV)/.installed ## every server on one core, divided by the in-repo Go net/http reference: req/s ratio, CPU per request, 15,000 connections, open-model p99, scaling, RSS (docs/performance.md)
	$(BIN)/python -m bench.perf --rounds "$(PERF_ROUNDS)" --rss-requests "$(PERF_RSS_REQUESTS)"

##@ Reliability (this machine)

## requests `memory` sends before it compares the server's memory with its warm-up size
REQUESTS ?= 1000000

.PHONY: memory
memory: $(VENV)/.installed ## RSS of one server (SERVER) over REQUESTS requests from wrk, as a table (docs/reliability.md#memory)
	$(BIN)/python -m servers.memory --server "$(SERVER)" --requests "$(REQUESTS)"

##@ Quality

.PHONY: test
test: $(VENV)/.installed ## run every test (CI runs this)
	$(BIN)/pytest

.PHONY: lint
lint: $(VENV)/.installed ## lint Python (ruff), shell (bash -n) and render every kustomization (kubectl kustomize)
	$(BIN)/ruff check --quiet .
	bash -n .ci/run
	@$(call need,kubectl)
	$(foreach d,$(KUSTOMIZATIONS),kubectl kustomize $(d) >/dev/null;)

.PHONY: lock
lock: $(VENV)/.installed ## regenerate the hash-locked requirements from pyproject.toml / requirements-dev.in
	for s in $(patsubst servers/%/pyproject.toml,%,$(wildcard servers/*/pyproject.toml)); do \
	  $(BIN)/uv pip compile -q servers/$$s/pyproject.toml --generate-hashes --python-version 3.11 --no-header -o servers/$$s/requirements.lock; \
	done
	$(BIN)/uv pip compile -q requirements-dev.in --generate-hashes --python-version 3.11 --no-header -o requirements-dev.lock

##@ Teardown

## answer yes to teardown's question before deleting the Hetzner cluster (YES=1)
YES ?=

.PHONY: teardown
teardown: ## delete what this project created: TestRuns, the kind cluster and registry, the Hetzner cluster (asks first)
	@$(MAKE) bench-clean
	@$(MAKE) kind-down
	@$(MAKE) hetzner-down

.PHONY: bench-clean
bench-clean: ## delete this project's TestRuns in the current context, if a cluster answers
	@$(call need,kubectl)
	@if ! kubectl get --raw=/readyz --request-timeout=10s >/dev/null 2>&1; then \
	  echo "No cluster answers at context '$$(kubectl config current-context 2>/dev/null)': no TestRuns to delete."; \
	elif ! kubectl get crd testruns.k6.io >/dev/null 2>&1; then \
	  echo "No k6-operator in context '$$(kubectl config current-context)': no TestRuns to delete."; \
	else kubectl -n py-bench delete testruns.k6.io -l app.kubernetes.io/part-of=py-serving-bench --ignore-not-found; fi

.PHONY: hetzner-down
# hetzner-k3s delete --force deletes before it looks at protect_against_deletion (v2.6.0,
# src/cluster/delete.cr), so the setting is honoured here, before anything is asked or deleted;
# a config without it is protected, as hetzner-k3s defaults it to true.
hetzner-down: $(VENV)/.installed ## delete the Hetzner cluster that hetzner-up made, if any and unless protect_against_deletion (asks first unless YES=1)
	@if [ ! -f $(HETZNER_KUBECONFIG) ]; then echo "No Hetzner cluster to delete ($(HETZNER_KUBECONFIG) does not exist)."; exit 0; fi; \
	[ -f $(HETZNER_CONFIG) ] || { echo "$(HETZNER_CONFIG) is missing: delete the cluster with hetzner-k3s delete --config <the config it was created with>." >&2; exit 2; }; \
	protected=$$($(BIN)/python -c 'import sys, yaml; print((yaml.safe_load(open(sys.argv[1])) or {}).get("protect_against_deletion", True) is not False)' $(HETZNER_CONFIG)); \
	[ "$$protected" = False ] || { echo "Kept the Hetzner cluster: protect_against_deletion is not false in $(HETZNER_CONFIG), so make teardown leaves it; set it to false there to let it delete the cluster." >&2; exit 2; }; \
	$(token_set); \
	$(call need,hetzner-k3s) \
	if [ "$(YES)" != 1 ]; then \
	  read -r -p "Delete the Hetzner cluster py-bench and all its servers? [y/N] " answer || answer=; \
	  [ "$$answer" = y ] || { echo "Kept the Hetzner cluster (make teardown YES=1 deletes it without asking)."; exit 0; }; \
	fi; \
	hetzner-k3s delete --config $(HETZNER_CONFIG) --force && rm -f $(HETZNER_KUBECONFIG)

##@ Help

# Colour only for a person at a terminal (https://no-color.org): piped, `make | grep bench` finds plain text.
.PHONY: help
help: ## list targets and variables
	@if [ -t 1 ] && [ -z "$${NO_COLOR:-}" ]; then color=1; else color=0; fi; \
	awk -v color=$$color 'BEGIN { FS = ":.*## "; \
	    if (color) { bold = "\033[1m"; yellow = "\033[33m"; cyan = "\033[36m"; off = "\033[0m" } } \
	  /^##@/ { printf "\n%s%s%s\n", bold, substr($$0, 5), off; next } \
	  /^## / { desc = substr($$0, 4); next } \
	  /^[A-Z][A-Z0-9_]* \?=/ && desc != "" { split($$0, v, / \?= ?/); \
	    printf "  %s%-16s%s %s (default: %s)\n", yellow, v[1], off, desc, (v[2] == "" ? "empty" : v[2]); desc = ""; next } \
	  /^[a-zA-Z0-9_-]+:.*## / { printf "  %s%-16s%s %s\n", cyan, $$1, off, $$2; next } \
	  { desc = "" } \
	  END { printf "\n%sServers%s (a folder with a server.yaml under servers/ each)\n  %s\n", bold, off, servers }' \
	  servers="$(SERVERS_ALL)" $(MAKEFILE_LIST)

# The virtual environment: rebuilt when a lock file changes.
$(VENV)/.installed: $(LOCKS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "Python 3.11 or newer is needed as '$(PYTHON)': install it, or run make with PYTHON=/path/to/python3.11." >&2; exit 2; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps $(addprefix -r ,$(LOCKS))
	@touch $@
