# The flux-order image: one static binary that runs both `flux-order manager`
# (the operator) and `flux-order purchase` (a sale's purchase API).
#
#   make docker-build IMG=ghcr.io/flux-order/flux-order:v0.1.0
#
# Plain multi-stage build: works with the classic builder and with BuildKit.
# Without BuildKit's cache mounts, the module and build caches live in image
# layers instead: modules are downloaded once per go.mod/go.sum, and the
# dependencies are compiled once per set of imported packages, so a change
# to our own code recompiles only our packages.

# Modules, cached until go.mod or go.sum change.
FROM golang:1.26 AS modules
WORKDIR /src
ENV CGO_ENABLED=0 GOOS=linux GOTOOLCHAIN=local
COPY go.mod go.sum ./
RUN go mod download && go mod verify

# The third-party packages the binary imports (a short text file: when it
# is unchanged, the compiled dependencies below come from the layer cache).
FROM modules AS deplist
COPY . .
RUN go list -deps -f '{{with .Module}}{{if not .Main}}{{$.ImportPath}}{{end}}{{end}}' . >/deps.txt

FROM modules AS build
COPY --from=deplist /deps.txt /deps.txt
# Same flags and profile as the final build (whose `go build .` applies
# default.pgo to every package), so its compile cache entries are reused.
COPY default.pgo ./
RUN xargs go build -trimpath -pgo=default.pgo </deps.txt
# Sources (.dockerignore keeps out everything the binary does not need).
COPY . .
ARG VERSION=dev
RUN go build -trimpath \
      -ldflags "-s -w -X github.com/flux-order/flux-order/cmd.Version=${VERSION}" \
      -o /out/flux-order . \
 && /out/flux-order version

# Runtime: no shell, no libc; CA certificates, tzdata and the nonroot user.
FROM gcr.io/distroless/static:nonroot
LABEL org.opencontainers.image.title="flux-order" \
      org.opencontainers.image.description="Flash-sale ticketing operator and purchase API" \
      org.opencontainers.image.source="https://github.com/flux-order/flux-order"
COPY --from=build /out/flux-order /flux-order
USER 65532:65532
ENTRYPOINT ["/flux-order"]
