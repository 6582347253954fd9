# Flux-Order: the one entry point for every task. `make help` lists them.

GO        ?= go
BIN       := $(CURDIR)/bin
IMG       ?= flux-order:dev
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/flux-order/flux-order/cmd.Version=$(VERSION)
# Go packages whose tests need no cluster (real Redis/PostgreSQL are started by the tests).
PKGS      := ./...

export GOTOOLCHAIN ?= local

.PHONY: help
help: ## Show the targets
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z0-9_-]+:.*##/ {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Development

.PHONY: build
build: ## Build bin/flux-order
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/flux-order .

.PHONY: fmt
fmt: ## Format the Go code
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet
	$(GO) vet ./...

.PHONY: lint
lint: vet ## gofmt check and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: envtest-assets
envtest-assets: ## Build kube-apiserver and etcd for envtest into bin/k8s/ (only when missing)
	@hack/envtest-assets.sh >/dev/null

.PHONY: test-deps
test-deps: ## Install redis-server, PostgreSQL, chromium and prometheus (promtool) for the tests when missing (as root; otherwise print the command)
	@hack/test-deps.sh

.PHONY: test
test: test-deps lint verify-generated envtest-assets helm helm-lint ## Every Go test: real redis-server, PostgreSQL and kube-apiserver (envtest), Prometheus, the Helm chart
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" HELM="$(HELM)" $(GO) test -count=1 $(PKGS)

.PHONY: fuzz
fuzz: ## Fuzz the purchase request decoder for 60s
	$(GO) test ./purchase/httpapi/ -run '^$$' -fuzz FuzzDecodePurchase -fuzztime 60s

.PHONY: bench
bench: ## Measure Flux-Order against the machine's ceilings and two baselines, and 1,000,000 in the waiting room (~15 min; the latter alone: go run ./hack/bench -steps queue-1m); writes docs/benchmarks.md
	@hack/bench-deps.sh
	$(GO) run ./hack/bench -runs 3 -write docs/benchmarks.md

# PGO_DIR keeps the sell-out's profile and tables of the last `make pgo`.
PGO_DIR ?= /tmp/flux-order-pgo

.PHONY: pgo
pgo: ## Refresh default.pgo (profile-guided optimisation of the binary) from a sell-out's CPU profile of the purchase pod (~3 min)
	@hack/bench-deps.sh
	rm -rf $(PGO_DIR)
	$(GO) run ./hack/bench -runs 1 -steps flux-order -profile $(PGO_DIR)
	cp $(PGO_DIR)/sellout-cpu.pprof default.pgo

.PHONY: bench-go
bench-go: ## Go benchmarks of the purchase path against real servers
	$(GO) test ./purchase/ ./purchase/httpapi/ ./purchase/waitingroom/ ./purchase/orderstore/ -run '^$$' -bench . -benchtime 2s -count 3

.PHONY: run-local
run-local: ## Serve a demo sale on 127.0.0.1:8080 with throw-away redis-server and PostgreSQL
	$(GO) run ./hack/localsale

##@ Code generation

CONTROLLER_GEN           ?= $(BIN)/controller-gen
CONTROLLER_TOOLS_VERSION ?= v0.23.0

$(CONTROLLER_GEN):
	GOBIN=$(BIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code from the API types
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and the manager's RBAC from the markers
	$(CONTROLLER_GEN) rbac:roleName=flux-order-manager crd paths="./api/..." paths="./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@$(MAKE) -s chart-crds

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) ## Fail if regenerating the CRD, RBAC or deepcopy changes anything
	@sum() { find api config $(CHART)/crds $(CHART)/files -type f -print0 | sort -z | xargs -0 sha256sum; }; before=$$(sum); \
	$(MAKE) -s generate manifests >/dev/null; \
	if [ "$$before" != "$$(sum)" ]; then echo "generated files were stale: they are regenerated now, review and commit them"; exit 1; fi

##@ Helm chart

CHART        := charts/flux-order
HELM         ?= $(BIN)/helm
HELM_VERSION ?= v3.22.0

.PHONY: helm
helm: ## Install the helm CLI (v3, Go module proxy) into bin/ unless HELM exists
	@command -v "$(HELM)" >/dev/null 2>&1 || { echo "installing helm $(HELM_VERSION) into $(BIN)/"; \
	  GOBIN=$(BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }

.PHONY: helm-lint
helm-lint: helm ## helm lint the chart (warnings fail)
	$(HELM) lint --strict $(CHART)

.PHONY: chart-crds
chart-crds: ## Copy the generated CRD, the manager ClusterRole and the purchase status policy into the chart (make manifests does it too)
	rm -f $(CHART)/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART)/crds/
	cp config/rbac/role.yaml $(CHART)/files/manager-role.yaml
	cp config/policy/purchase_status_policy.yaml $(CHART)/files/purchase-status-policy.yaml

##@ Deployment

KIND             ?= kind
KUBECTL          ?= kubectl
DOCKER           ?= docker
DOCKER_BUILD_FLAGS ?=
KIND_CLUSTER     ?= flux-order
KIND_CONFIG      ?= hack/kind-config.yaml
KUBE_CONTEXT     ?= kind-$(KIND_CLUSTER)
NAMESPACE        ?= flux-order-system
RELEASE          ?= flux-order
REDIS_IMG        ?= redis:7
POSTGRES_IMG     ?= postgres:15
SAMPLE_NAMESPACE ?= default
# What `deploy` does first: build $(IMG) and load it into kind. Empty for any
# other cluster (IMG must then be pullable there: make docker-push).
DEPLOY_LOAD      ?= kind-load
# kind-offline kit (machines that cannot pull images, ../shared/kind-offline):
# when present, every recipe below runs with its env (kind, kubectl and its
# docker shim first on PATH, KIND_NODE_IMAGE set), and its Traefik is the
# ingress controller. Elsewhere kind uses its stock node image (or
# $KIND_NODE_IMAGE) and INGRESS_MANIFEST names the ingress controller to
# install (docs/install.md); without one, kind-up installs none.
KIND_OFFLINE_DIR ?= $(abspath $(CURDIR)/../shared/kind-offline)
KIT               = $(if $(wildcard $(KIND_OFFLINE_DIR)/env),eval "$$($(KIND_OFFLINE_DIR)/env)" &&)
INGRESS_MANIFEST ?= $(if $(KIT),$(KIND_OFFLINE_DIR)/manifests/traefik.yaml)
INGRESS_IMAGES   ?= $(if $(KIT),traefik:v3.6)
INGRESS_NAMESPACE ?= traefik
KCTL              = $(KUBECTL) --context $(KUBE_CONTEXT)
# IMG split for the chart's image.repository and image.tag.
IMG_REPO          = $(shell echo '$(IMG)' | sed -E 's/:[^:/]+$$//')
IMG_TAG           = $(or $(shell echo '$(IMG)' | sed -nE 's/.*:([^:/]+)$$/\1/p'),latest)
MANAGER           = $(if $(findstring flux-order,$(RELEASE)),$(RELEASE),$(RELEASE)-flux-order)-manager

.PHONY: kit
kit: ## Prepare the kind-offline kit when it is there (idempotent; ~1 s when ready, ~40 min the first time)
	@if [ -x "$(KIND_OFFLINE_DIR)/prepare" ]; then \
	  echo "kind-offline: $(KIND_OFFLINE_DIR)/prepare (log $(BIN)/kind-offline-prepare.log)"; mkdir -p $(BIN); \
	  $(KIND_OFFLINE_DIR)/prepare >$(BIN)/kind-offline-prepare.log 2>&1 || { tail -n 30 $(BIN)/kind-offline-prepare.log; exit 1; }; \
	  tail -n 1 $(BIN)/kind-offline-prepare.log; \
	fi

.PHONY: kind-up
kind-up: kit ## kind cluster flux-order (hack/kind-config.yaml) with an ingress controller on 127.0.0.1:18080
	@$(KIT) if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
	  echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
	  echo "$(KIND) create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG) $${KIND_NODE_IMAGE:+--image $$KIND_NODE_IMAGE}"; \
	  $(KIND) create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG) $${KIND_NODE_IMAGE:+--image "$$KIND_NODE_IMAGE"} --wait 3m; \
	fi
	$(KIT) $(KCTL) wait --for=condition=Ready nodes --all --timeout=3m
ifneq ($(strip $(INGRESS_IMAGES)),)
	$(KIT) $(KIND) load docker-image --name $(KIND_CLUSTER) $(INGRESS_IMAGES)
endif
ifneq ($(strip $(INGRESS_MANIFEST)),)
	$(KIT) $(KCTL) apply -f $(INGRESS_MANIFEST)
	$(KIT) $(KCTL) -n $(INGRESS_NAMESPACE) wait --for=condition=Available deployment --all --timeout=3m
else
	@echo "kind-up: no ingress controller installed (INGRESS_MANIFEST is empty): see docs/install.md"
endif

.PHONY: docker-build
docker-build: kit ## Build the image IMG (manager and purchase API)
	$(KIT) $(DOCKER) build $(DOCKER_BUILD_FLAGS) --build-arg VERSION=$(VERSION) -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image IMG
	$(DOCKER) push $(IMG)

.PHONY: kind-load
kind-load: docker-build ## Build IMG and load it, redis:7 and postgres:15 into the kind cluster
	@$(KIT) for i in $(REDIS_IMG) $(POSTGRES_IMG); do \
	  $(DOCKER) image inspect $$i >/dev/null 2>&1 || $(DOCKER) pull $$i || exit 1; done
	$(KIT) $(KIND) load docker-image --name $(KIND_CLUSTER) $(IMG) $(REDIS_IMG) $(POSTGRES_IMG)

# MONITORING=true (the default) also applies prometheus-operator's PodMonitor,
# ServiceMonitor and PrometheusRule CRDs (from its Go module,
# hack/monitoring-crds.sh) and installs the chart with every monitoring object
# on, as the e2e suite checks them; no Prometheus runs in the cluster.
MONITORING ?= true
MONITORING_SETS := $(foreach o,podMonitor serviceMonitor prometheusRule grafanaDashboard,--set monitoring.$(o).enabled=$(MONITORING))

.PHONY: deploy
deploy: $(DEPLOY_LOAD) helm ## kind-load, apply the CRD (docs/install.md), then helm upgrade --install the chart with IMG; waits for the manager
	$(KIT) $(KCTL) apply --server-side --force-conflicts -f $(CHART)/crds/
	@if [ "$(MONITORING)" = true ]; then crds=$$(hack/monitoring-crds.sh) && \
	  $(KIT) $(KCTL) apply --server-side --force-conflicts $$(printf -- ' -f %s' $$crds); fi
	$(KIT) $(HELM) upgrade --install $(RELEASE) $(CHART) --kube-context $(KUBE_CONTEXT) \
	  --namespace $(NAMESPACE) --create-namespace $(MONITORING_SETS) \
	  --set image.repository=$(IMG_REPO) --set-string image.tag=$(IMG_TAG) --set image.pullPolicy=IfNotPresent \
	  --set defaults.redis.image=$(REDIS_IMG) --set defaults.postgres.image=$(POSTGRES_IMG) \
	  --set-string "podAnnotations.fluxorder\.io/image-id=$$($(DOCKER) image inspect -f '{{.Id}}' $(IMG) 2>/dev/null | cut -c8-19)" \
	  --wait --timeout 5m
	$(KIT) $(KCTL) -n $(NAMESPACE) rollout status deployment/$(MANAGER) --timeout=5m

.PHONY: undeploy
undeploy: helm ## helm uninstall the operator (the CRD and every FlashSale stay)
	$(KIT) $(HELM) uninstall $(RELEASE) --kube-context $(KUBE_CONTEXT) --namespace $(NAMESPACE)

.PHONY: sample
sample: ## Apply config/samples (FlashSale demo-concert, host demo-concert.localtest) and wait until it is OnSale
	$(KIT) $(KCTL) -n $(SAMPLE_NAMESPACE) apply -f config/samples
	@$(KIT) KUBECTL="$(KCTL)" hack/wait-flashsale.sh -n $(SAMPLE_NAMESPACE) demo-concert OnSale 300
	@echo "sample: the sale page is http://demo-concert.localtest:18080/ once /etc/hosts has '127.0.0.1 demo-concert.localtest' (README, Quick start)"

.PHONY: kind-down
kind-down: ## Delete the kind cluster
	$(KIT) $(KIND) delete cluster --name $(KIND_CLUSTER)

# -parallel 3: the scenarios after the first run three at a time (each has its own
# namespace and sale; the tests bound provisioning and serialise the load
# storms themselves; more at once starves a 2-core node: a storm then sees
# 503s from sales still provisioning beside it); -timeout is only a backstop.
# The previous release, for the upgrade scenario (test/e2e/upgrade_test.go):
# the operator as it stood before the datastore-template pins (issue 21),
# checked out into bin/prev-src (a git worktree: the clone must hold
# PREV_REF's history) and built into PREV_IMG.
PREV_REF ?= 8b4c344
PREV_IMG ?= flux-order:prev
PREV_SRC := $(BIN)/prev-src

.PHONY: prev-image
prev-image: kit ## Build the previous release (PREV_REF) into PREV_IMG and load it into kind, for the upgrade scenario
	@if [ "$$(git -C $(PREV_SRC) rev-parse HEAD 2>/dev/null)" != "$$(git rev-parse $(PREV_REF)^{commit})" ]; then \
	  rm -rf $(PREV_SRC); git worktree prune; git worktree add --detach $(PREV_SRC) $(PREV_REF) || \
	  { echo "prev-image: commit $(PREV_REF) is not in this clone (git fetch --unshallow)"; exit 1; }; fi
	$(KIT) $(DOCKER) build $(DOCKER_BUILD_FLAGS) --build-arg VERSION=$(PREV_REF) -t $(PREV_IMG) $(PREV_SRC)
	$(KIT) $(KIND) load docker-image --name $(KIND_CLUSTER) $(PREV_IMG)

# A failed e2e test writes what its namespace held here (test/e2e: dumpNamespace).
E2E_DUMP_DIR ?= $(CURDIR)/bin/e2e-dumps

# HELM: the scoped-install scenario helm-upgrades the release to
# watchNamespaces and back (its values otherwise reused).
.PHONY: test-e2e
test-e2e: prev-image helm ## End-to-end tests against the kind cluster (after make kind-up deploy)
	rm -rf $(E2E_DUMP_DIR)
	$(KIT) E2E_DUMP_DIR=$(E2E_DUMP_DIR) KUBE_CONTEXT=$(KUBE_CONTEXT) OPERATOR_NAMESPACE=$(NAMESPACE) RELEASE=$(RELEASE) HELM="$(HELM)" \
	  PREV_CHART=$(PREV_SRC)/charts/flux-order PREV_IMG=$(PREV_IMG) \
	  $(GO) test ./test/e2e/ -tags e2e -count=1 -v -parallel 3 -timeout 30m
