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

.PHONY: test
test: lint ## Unit and integration tests (starts its own redis-server and PostgreSQL)
	$(GO) test -count=1 $(PKGS)

.PHONY: fuzz
fuzz: ## Fuzz the purchase request decoder for 60s
	$(GO) test ./purchase/ -run '^$$' -fuzz FuzzDecodePurchase -fuzztime 60s

.PHONY: bench
bench: ## Go benchmarks of the purchase path against real servers
	$(GO) test ./purchase/ -run '^$$' -bench . -benchtime 3s -count 5

.PHONY: run-local
run-local: ## Serve a demo sale on 127.0.0.1:8080 with throw-away redis-server and PostgreSQL
	$(GO) run ./hack/localsale
