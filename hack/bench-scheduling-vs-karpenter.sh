#!/usr/bin/env bash
# Identical-input scheduling comparison with Karpenter, both tools in one run on this machine.
#
#   hack/bench-scheduling-vs-karpenter.sh [SIZES...]     (default: 100 1000 5000 10000 20000)
#
# 1. Karpenter's own benchmark generator writes its pods (makeDiversePods, seed 42, one fresh draw
#    per size) and its 400 fake instance types as JSON: hack/karpenter-head-to-head/ is compiled
#    into Karpenter's scheduling test package (sigs.k8s.io/karpenter at KARPENTER_CORE_VERSION,
#    fetched with go mod download).
# 2. stoker's scheduling benchmark (criterion, release build) writes its real us-east-1 catalog in
#    the same form and solves those pods on both type sets.
# 3. Karpenter's scheduler solves the same pods on both type sets (STOKER_H2H_RUNS runs per size,
#    median; default 1, as Karpenter's benchmark with -benchtime 1x).
# It prints one table: pods/s, nodes and $/h of each plan (every NodeClaim at its cheapest
# compatible offering), per type set and size. Raw results stay in $STOKER_CACHE/head-to-head.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require go "install Go 1.26 or newer, then run this again"
require cargo "install Rust with rustup (https://rustup.rs), then run this again"
sizes="${*:-100 1000 5000 10000 20000}"
export STOKER_H2H_SIZES="$sizes" STOKER_H2H_DIR="$STOKER_CACHE/head-to-head"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOKER_CACHE/target}"
rm -rf "$STOKER_H2H_DIR" && mkdir -p "$STOKER_H2H_DIR"

fetch_karpenter_module
module="$KARPENTER_MODULE"
cp "$REPO_ROOT/hack/karpenter-head-to-head/stoker_head_to_head_test.go" "$module/pkg/controllers/provisioning/scheduling/"

# Runs one step with its output kept in $STOKER_H2H_DIR/LOG and shown when the step fails.
step() { # MESSAGE LOG COMMAND...
  local message=$1 logfile="$STOKER_H2H_DIR/$2"
  shift 2
  with_heartbeat "$message" bash -c '"$@" >"$0" 2>&1 || { tail -n 40 "$0"; exit 1; }' "$logfile" "$@"
}
# One of the helper's tests, run in Karpenter's package (exported: steps run in a child shell).
karpenter() { # TEST [VAR=VALUE...]
  local test=$1
  shift
  env -C "$KARPENTER_MODULE" "$@" GOTOOLCHAIN=local GOFLAGS=-mod=mod go test -tags test_performance \
    -timeout 0 -run "^$test\$" -v ./pkg/controllers/provisioning/scheduling/
}
export -f karpenter

step "Karpenter's generator writes its pods and types (the first build of its tests takes minutes)" \
  export.log karpenter TestStokerExportInput
cd "$REPO_ROOT"
step "stoker solves them (the first release build takes ~15 min on 2 cores)" stoker.log \
  cargo bench --locked --bench scheduling -- --warm-up-time 1 --measurement-time "${MEASUREMENT_SECONDS:-5}"
for types in types-karpenter.json types-real-catalog.json; do
  step "Karpenter solves them on $types" "karpenter-$types.log" \
    karpenter TestStokerSolve "STOKER_H2H_TYPES=$types" "STOKER_H2H_RUNS=${STOKER_H2H_RUNS:-1}"
done

python3 "$REPO_ROOT/hack/head_to_head_table.py" "$STOKER_H2H_DIR" "$CARGO_TARGET_DIR/criterion"
