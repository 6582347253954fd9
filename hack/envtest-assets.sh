#!/usr/bin/env bash
# Builds the kube-apiserver and etcd binaries that controller-runtime's envtest
# needs, from source fetched through the Go module proxy (the usual envtest
# tarballs cannot be downloaded here), into bin/k8s/<K8S_VERSION>/.
# The absolute directory is printed as the last line of stdout, so:
#   export KUBEBUILDER_ASSETS="$(hack/envtest-assets.sh)"
# Everything else goes to stderr. When both binaries exist it only prints.
# To rebuild (e.g. after changing ETCD_VERSION), delete that directory.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/bin/k8s/$K8S_VERSION"

if [[ -x "$out/kube-apiserver" && -x "$out/etcd" ]]; then
  echo "$out"
  exit 0
fi

log() { echo "envtest-assets: $*" >&2; }

# Pin the local toolchain, keep the throw-away modules away from any go.work,
# and build static binaries like the upstream releases.
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0

tmp="$(mktemp -d)"
mkdir -p "$out"
# Binaries are linked to a temp name inside $out and renamed into place (same
# filesystem, so atomic): an interrupted build never leaves a half binary.
trap 'rm -rf "$tmp" "$out"/.*.tmp.$$' EXIT

# new_module DIR MODPATH IMPORT CALL: a module whose main.go imports IMPORT
# and exits with the result of CALL.
new_module() {
  mkdir -p "$1"
  (cd "$1" && go mod init "$2" >/dev/null 2>&1)
  printf 'package main\n\nimport (\n\t"os"\n\n%s\n)\n\nfunc main() {\n%s\n}\n' "$3" "$4" >"$1/main.go"
}

if [[ ! -x "$out/kube-apiserver" ]]; then
  log "building kube-apiserver v$K8S_VERSION (takes several minutes)"
  staging="v0.${K8S_VERSION#1.}" # k8s.io/kubernetes v1.X.Y <-> staging modules v0.X.Y
  minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
  m="$tmp/kube-apiserver"
  new_module "$m" envtest/kube-apiserver \
    $'\t"k8s.io/component-base/cli"\n\t"k8s.io/kubernetes/cmd/kube-apiserver/app"' \
    $'\tos.Exit(cli.Run(app.NewAPIServerCommand()))'
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them
  # with ./staging/src/...; replace directives of a dependency are ignored, so
  # mirror each of them with the published staging version.
  gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$gomod" ]] || { log "no go.mod for k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }
  {
    printf 'require (\n\tk8s.io/kubernetes v%s\n\tk8s.io/component-base %s\n)\n' "$K8S_VERSION" "$staging"
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
  } >>"$m/go.mod"
  (
    cd "$m"
    go mod tidy >&2
    go build -trimpath -o "$out/.kube-apiserver.tmp.$$" -ldflags "-s -w \
-X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
-X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$minor" .
  )
  mv "$out/.kube-apiserver.tmp.$$" "$out/kube-apiserver"
fi

if [[ ! -x "$out/etcd" ]]; then
  log "building etcd v$ETCD_VERSION"
  # go.etcd.io/etcd/v3 (the etcd main package) is not on the module proxy,
  # so wrap etcdmain.Main like upstream's main.go does. server/v3 requires its
  # sibling modules at the same version, so no replace lines are needed.
  m="$tmp/etcd"
  new_module "$m" envtest/etcd \
    $'\t"go.etcd.io/etcd/server/v3/etcdmain"' \
    $'\tetcdmain.Main(os.Args)'
  (
    cd "$m"
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
    go mod tidy >&2
    go build -trimpath -ldflags "-s -w" -o "$out/.etcd.tmp.$$" .
  )
  mv "$out/.etcd.tmp.$$" "$out/etcd"
fi

log "done"
echo "$out"
