#!/usr/bin/env bash
# Waits until a FlashSale reaches a phase, printing each phase it passes
# through and, on timeout, what the sale and its pods look like.
#   hack/wait-flashsale.sh [-n NAMESPACE] NAME PHASE [TIMEOUT_SECONDS]
# KUBECTL may carry flags, e.g. KUBECTL="kubectl --context kind-flux-order".
set -euo pipefail

ns=()
if [[ "${1:-}" == "-n" ]]; then ns=(-n "$2"); shift 2; fi
name="${1:?usage: $0 [-n NAMESPACE] NAME PHASE [TIMEOUT_SECONDS]}"
want="${2:?usage: $0 [-n NAMESPACE] NAME PHASE [TIMEOUT_SECONDS]}"
timeout="${3:-300}"
read -ra kubectl <<<"${KUBECTL:-kubectl}"

start=$SECONDS
last=""
while :; do
  phase="$("${kubectl[@]}" "${ns[@]}" get flashsale "$name" -o 'jsonpath={.status.phase}' 2>/dev/null || true)"
  if [[ "$phase" != "$last" ]]; then
    printf 'flashsale/%s: %s after %ds\n' "$name" "${phase:-(no phase yet)}" $((SECONDS - start))
    last="$phase"
  fi
  if [[ "$phase" == "$want" ]]; then
    "${kubectl[@]}" "${ns[@]}" get flashsale "$name" -o wide
    exit 0
  fi
  if ((SECONDS - start >= timeout)); then
    echo "flashsale/$name: not $want after ${timeout}s" >&2
    "${kubectl[@]}" "${ns[@]}" get flashsale "$name" -o yaml >&2 || true
    "${kubectl[@]}" "${ns[@]}" get pods,pvc -l "app.kubernetes.io/instance=$name" -o wide >&2 || true
    "${kubectl[@]}" "${ns[@]}" get events --sort-by=.lastTimestamp >&2 || true
    exit 1
  fi
  sleep 1
done
