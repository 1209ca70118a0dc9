#!/usr/bin/env bash
# Runs Karpenter's own scheduling benchmark (sigs.k8s.io/karpenter, scheduling_benchmark_test.go,
# build tag test_performance) at the sizes given (default 100 1000 5000), for the side-by-side
# figures in docs/performance.md. The module comes from the Go module proxy at the pinned version,
# unpacked into the cache; its go directive is lowered to the local toolchain when needed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require go "install Go 1.26 or newer, then run this again"
require curl "install curl, then run this again"
sizes=("${@:-100 1000 5000}")
dir="$STOKER_CACHE/karpenter-$KARPENTER_CORE_VERSION"
if [[ ! -f $dir/.complete ]]; then
  log "fetching sigs.k8s.io/karpenter@$KARPENTER_CORE_VERSION with go mod download"
  rm -rf "$dir" && mkdir -p "$dir"
  # go mod download honours GOPROXY and verifies the module; its zip is unpacked where the
  # benchmark is run (the module cache itself is read-only).
  # A module asking for a newer Go than the local one still downloads (its go.mod is adjusted
  # below), so the command's complaint about that is not fatal; a missing zip is.
  zip=$(cd "$dir" && { go mod download -json "sigs.k8s.io/karpenter@$KARPENTER_CORE_VERSION" || true; } |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("Zip", ""))')
  [[ -f $zip ]] || die "go mod download did not fetch sigs.k8s.io/karpenter@$KARPENTER_CORE_VERSION"
  (cd "$dir" && unzip -q "$zip" && chmod -R u+w .)
  touch "$dir/.complete"
fi
cd "$dir/sigs.k8s.io/karpenter@$KARPENTER_CORE_VERSION"
local_go="$(go env GOVERSION | sed 's/^go//')"
sed -i -E "s/^go [0-9.]+$/go $local_go/" go.mod
for size in ${sizes[*]}; do
  out="$STOKER_CACHE/karpenter-bench-$size.log"
  with_heartbeat "Karpenter's scheduling benchmark at $size pods" bash -c \
    "GOTOOLCHAIN=local GOFLAGS=-mod=mod go test -tags test_performance -run '^\$' -bench 'BenchmarkScheduling${size}\$' -benchtime 1x ./pkg/controllers/provisioning/scheduling/ >'$out' 2>&1"
  grep -E '^BenchmarkScheduling' "$out" || tail -n 5 "$out"
done
