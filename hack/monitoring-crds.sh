#!/usr/bin/env bash
# Prints the paths of prometheus-operator's PodMonitor, ServiceMonitor and
# PrometheusRule CRDs, taken from the prometheus-operator Go module (the Go
# module proxy serves it; no GitHub download), for `make deploy` to apply to
# a kind cluster before the chart is installed with monitoring on.
set -euo pipefail
version="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
dir=$(cd / && GOFLAGS=-mod=mod go mod download -json "github.com/prometheus-operator/prometheus-operator@${version}" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [[ -z "$dir" ]]; then
  echo "monitoring-crds: could not download github.com/prometheus-operator/prometheus-operator@${version}" >&2
  exit 1
fi
for kind in podmonitors servicemonitors prometheusrules; do
  echo "$dir/example/prometheus-operator-crd/monitoring.coreos.com_${kind}.yaml"
done
