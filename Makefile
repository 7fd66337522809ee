# Smart Server: `make dev` runs the whole platform locally, `make test` runs every check.
# Both set up what they need first (Debian packages, the virtualenv, the control plane).
SHELL := bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help dev test system venv binaries helm node image cluster lint typecheck crds unit chaos bench chart clean

help: ## Show this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

dev: system binaries ## Run the whole platform locally (control plane, operator, samples); Ctrl-C stops it
	$(BIN)/python -m smart_sim.dev

test: system binaries helm node image ## Lint, type-check and run every test on a real control plane
	@scripts/test

system: ## Install the Debian packages the platform needs (only missing ones)
	@scripts/system-packages

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## Create the virtualenv and install the project into it

binaries: venv ## Build (once, cached in ~/.cache/smartserver) or find the control-plane binaries
	@$(BIN)/python -m smart_sim.controlplane --build-only

helm: venv ## Build (once, cached) or find helm, which the chart tests use
	@$(BIN)/python -m smart_sim.controlplane --build-only --with-helm | tail -1

node: venv ## Build (once, cached) the local node: kubelet, kube-proxy, kube-scheduler, CoreDNS
	@$(BIN)/python -m smart_sim.controlplane --build-only --node | tail -4

image: venv ## Build the platform's image without Docker (cached by content hash)
	@$(BIN)/python -m smart_sim.image

cluster: binaries ## Start a local control plane; NODE=1 adds a node that runs pods (root)
	$(BIN)/python -m smart_sim.controlplane $(if $(NODE),--node)

lint: venv ## ruff and the import-linter boundaries
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv ## mypy --strict on the product code
	$(BIN)/mypy

crds: venv ## Regenerate crds/*.yaml from the pydantic models, and manifests/catalog/ from the built-in templates
	$(BIN)/python -m smart_operator.crdgen
	$(BIN)/python -m smart_operator.templates.catalog manifests/catalog

unit: venv ## Only the fast tests that need no control plane
	$(BIN)/pytest tests/unit -q

chaos: system binaries ## The chaos suite at 12 booted Domains and 12 agent kills in traffic (make test: 4 and 3); prints what leaked or was miscounted
	SMART_CHAOS_DOMAINS=12 SMART_CHAOS_KILLS=8 SMART_CHAOS_TRAFFIC_KILLS=12 \
	  $(BIN)/pytest -p no:cacheprovider -s -m chaos tests/integration tests/cluster

bench: system binaries ## Run the benchmarks and print their figures
	$(BIN)/python -m smart_sim.bench

chart: venv ## Copy crds/ and manifests/catalog/ into the Helm chart, then lint and render it (builds helm once)
	rm -f charts/smartserver/crds/*.yaml charts/smartserver/catalog/*.yaml
	cp $(filter-out crds/kustomization.yaml,$(wildcard crds/*.yaml)) charts/smartserver/crds/
	mkdir -p charts/smartserver/catalog
	cp $(filter-out manifests/catalog/kustomization.yaml,$(wildcard manifests/catalog/*.yaml)) charts/smartserver/catalog/
	@helm=$$($(BIN)/python -c 'from smart_sim.controlplane.binaries import ensure_helm; print(ensure_helm())') && \
	  $$helm lint --strict charts/smartserver && \
	  $$helm template smartserver charts/smartserver -n smartserver-system >/dev/null && \
	  echo "charts/smartserver renders; helm is $$helm"

clean: ## Remove the virtualenv and caches (the binary cache in ~/.cache stays)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
