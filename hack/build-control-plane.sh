#!/usr/bin/env bash
# Builds the local control plane from upstream Go modules, once per version, into $STOKER_CACHE:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (Kubernetes), etcd, kwok and
# its stage files, and helm (for the chart tests). A second run finds the binaries and returns at once.
#
# k8s.io/kubernetes cannot be `go install`ed because its go.mod replaces every staging module
# (k8s.io/api, k8s.io/apiserver, ...) with a local path. A wrapper module that requires it and
# replaces each staging module with its published v0.<minor>.<patch> tag builds the same code.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require go "install Go 1.26 or newer (https://go.dev/dl/), then run this again"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

build_kubernetes() {
  local out=$K8S_BIN
  [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kube-scheduler && -x $out/kubectl ]] && return 0
  local work="$STOKER_CACHE/build/kubernetes-$KUBERNETES_VERSION"
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local staging_version="v0.${KUBERNETES_VERSION#v1.}"
  mkdir -p "$work"
  cd "$work"
  if [[ ! -f go.mod ]] || ! grep -q "k8s.io/kubernetes $KUBERNETES_VERSION" go.mod; then
    rm -f go.mod go.sum
    go mod init stoker.local/kubernetes-build >/dev/null 2>&1
    local upstream_mod
    upstream_mod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [[ -f $upstream_mod ]] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION from the Go module proxy"
    # Every staging module upstream requires at v0.0.0 is published under the matching v0 tag.
    local staging
    staging=$(awk '/^require/,/^\)/ { if ($2 == "v0.0.0") print $1 }' "$upstream_mod")
    for module in $staging; do
      go mod edit "-replace=$module=$module@$staging_version"
    done
    go mod edit "-require=k8s.io/kubernetes@$KUBERNETES_VERSION"
    log "  resolving modules for Kubernetes $KUBERNETES_VERSION ($(wc -w <<<"$staging") staging modules)"
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBERNETES_VERSION" \
      "k8s.io/kubernetes/cmd/kube-scheduler@$KUBERNETES_VERSION" \
      "k8s.io/kubernetes/cmd/kubectl@$KUBERNETES_VERSION"
  fi
  local pkg=component-base/version
  local ldflags="-s -w -X k8s.io/$pkg.gitVersion=$KUBERNETES_VERSION -X k8s.io/$pkg.gitMajor=1 -X k8s.io/$pkg.gitMinor=$minor -X k8s.io/$pkg.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$out.tmp"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x $out.tmp/$cmd ]] && continue
    log "  compiling $cmd $KUBERNETES_VERSION"
    go build -trimpath -ldflags "$ldflags" -o "$out.tmp/$cmd.partial" "k8s.io/kubernetes/cmd/$cmd"
    mv "$out.tmp/$cmd.partial" "$out.tmp/$cmd"
  done
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_etcd() {
  local out=$ETCD_BIN
  [[ -x $out/etcd ]] && return 0
  local work="$STOKER_CACHE/build/etcd-$ETCD_VERSION"
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  go mod init stoker.local/etcd-build >/dev/null 2>&1
  # etcd's own main package lives in its root module, which carries replace directives; the server
  # module's etcdmain is the same entry point and builds cleanly from the proxy.
  cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" .
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_kwok() {
  local out=$KWOK_BIN
  [[ -x $out/kwok && -d $out/stages ]] && return 0
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  local src
  src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  mkdir -p "$out.tmp/stages"
  # The stages that make kwok act like a kubelet: nodes become Ready and renew their Lease, pods
  # become Ready and go away when deleted, and a Job's pods finish: after the delay their
  # pod-complete.stage.kwok.x-k8s.io/delay annotation gives (a Go duration; 1–5 s without one),
  # so a benchmark's Job can keep its nodes busy as real work would.
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
               pod/fast/pod-ready pod/general/pod-complete pod/fast/pod-delete; do
    local file="$src/kustomize/stage/$stage.yaml"
    [[ -f $file ]] || die "kwok $KWOK_VERSION has no stage file $stage.yaml"
    cp "$file" "$out.tmp/stages/"
  done
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# helm, for the chart tests (lint, template, and the rendered manifests against the apiserver).
build_helm() {
  local out="$HELM_BIN"
  rm -rf "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

mkdir -p "$STOKER_CACHE"
[[ -x $K8S_BIN/kube-apiserver && -x $K8S_BIN/kubectl ]] || with_heartbeat "building Kubernetes $KUBERNETES_VERSION from source (cold: 10-25 min on 2 cores)" build_kubernetes
[[ -x $ETCD_BIN/etcd ]] || with_heartbeat "building etcd $ETCD_VERSION" build_etcd
[[ -x $KWOK_BIN/kwok ]] || with_heartbeat "building kwok $KWOK_VERSION" build_kwok
[[ -x $HELM_BIN/helm ]] || with_heartbeat "building helm $HELM_VERSION" build_helm
log "control plane binaries ready in $STOKER_CACHE"
