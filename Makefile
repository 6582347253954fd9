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
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

.PHONY: test
test: lint verify-generated envtest-assets ## Every Go test: real redis-server, PostgreSQL and kube-apiserver (envtest)
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" $(GO) test -count=1 $(PKGS)

.PHONY: fuzz
fuzz: ## Fuzz the purchase request decoder for 60s
	$(GO) test ./purchase/ -run '^$$' -fuzz FuzzDecodePurchase -fuzztime 60s

.PHONY: bench
bench: ## Go benchmarks of the purchase path against real servers
	$(GO) test ./purchase/ -run '^$$' -bench . -benchtime 3s -count 5

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

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) ## Fail if regenerating the CRD, RBAC or deepcopy changes anything
	@sum() { find api config -type f -print0 | sort -z | xargs -0 sha256sum; }; before=$$(sum); \
	$(MAKE) -s generate manifests >/dev/null; \
	if [ "$$before" != "$$(sum)" ]; then echo "generated files were stale: they are regenerated now, review and commit them"; exit 1; fi
