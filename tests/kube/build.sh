#!/usr/bin/env bash
# Build the real kube-apiserver and etcd the operator's tests run (no kubelet needed), and the
# kustomize that renders deploy/kubernetes for them, from the
# k8s.io/kubernetes Go module at one pinned release, into $TESSERA_KUBE_BIN (default
# ~/.cache/tessera/kube-<release>/bin). Skips the build when both binaries are there.
#
# k8s.io/kubernetes refers to its staging modules (k8s.io/api, k8s.io/apiserver, …) as v0.0.0
# with `replace` to ./staging: a module that imports it must replace each with the matching
# published v0.X.Y. Those replaces are generated here from the release's own go.mod. etcd is
# built from the same module graph (the release requires its server module).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.34.4}"
STAGING_VERSION="v0.${KUBE_VERSION#1.}"
CACHE="${TESSERA_KUBE_CACHE:-$HOME/.cache/tessera/kube-$KUBE_VERSION}"
BIN="${TESSERA_KUBE_BIN:-${KUBEBUILDER_ASSETS:-$CACHE/bin}}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.7.1}"

# The network-policy-api project's CRDs, as it releases them (experimental channel: every
# field, so the tests see what Tessera refuses): ClusterNetworkPolicy from v0.3.0,
# AdminNetworkPolicy and BaselineAdminNetworkPolicy from v0.1.7, the last release with them.
CRDS="${TESSERA_KUBE_CRDS:-$HOME/.cache/tessera/network-policy-api}"
mkdir -p "$CRDS"
for release in v0.3.0 v0.1.7; do
    dir="$(go mod download -json "sigs.k8s.io/network-policy-api@$release" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
    cp "$dir"/config/crd/experimental/policy.networking.k8s.io_*.yaml "$CRDS/"
done
chmod u+w "$CRDS"/*.yaml
echo "network-policy-api CRDs in $CRDS: $(cd "$CRDS" && echo *.yaml)"

if [[ -x "$BIN/etcd" && "$("$BIN/kube-apiserver" --version 2>/dev/null)" == "Kubernetes v$KUBE_VERSION" ]] \
    && "$BIN/kustomize" version 2>/dev/null | grep -qx "$KUSTOMIZE_VERSION"; then
    echo "kube-apiserver and etcd $KUBE_VERSION, kustomize $KUSTOMIZE_VERSION already built in $BIN"
    exit 0
fi
here="$(cd "$(dirname "$0")" && pwd)"
work="$CACHE/module"
mkdir -p "$work/kube-apiserver" "$work/etcd" "$BIN"
cp "$here/kube-apiserver.go" "$work/kube-apiserver/main.go"
cp "$here/etcd.go" "$work/etcd/main.go"
cd "$work"
mod="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
{
    echo "module tessera.test/kube"
    echo
    echo "go $(sed -n 's/^go //p' "$mod")"
    echo
    echo "require k8s.io/kubernetes v$KUBE_VERSION"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$STAGING_VERSION"'#p' "$mod"
    echo ")"
} > go.mod
go mod tidy
# The release's version, as its own build stamps it (clients and `/version` read it).
minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w $stamp" -o "$BIN/kube-apiserver" ./kube-apiserver
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$BIN/etcd" ./etcd
GOBIN="$BIN" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
echo "built kube-apiserver and etcd $KUBE_VERSION, kustomize $KUSTOMIZE_VERSION into $BIN"
