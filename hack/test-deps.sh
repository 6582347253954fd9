#!/usr/bin/env bash
# Makes sure the Debian packages `make test` starts real servers from are
# installed: redis-server and PostgreSQL, chromium for the sale page's
# browser tests (purchase/*browser_test.go), and prometheus (promtool and
# the server) for the alert and dashboard tests (test/monitoring,
# test/chart). Run as root it installs the missing ones with apt-get;
# otherwise it prints the one command to run and fails.
# Everything else the tests need (controller-gen, helm, the envtest
# kube-apiserver and etcd) is built from the Go module proxy by make.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v pg_ctl >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || missing+=(chromium)
((${#missing[@]})) || exit 0
if [[ $(id -u) != 0 ]]; then
  echo "make test needs ${missing[*]}: run \`sudo apt-get install -y ${missing[*]}\`, then make test again" >&2
  exit 1
fi
echo "test-deps: installing ${missing[*]} (apt-get)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
