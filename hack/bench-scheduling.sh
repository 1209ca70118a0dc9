#!/usr/bin/env bash
# Runs the scheduling benchmark (criterion, release build) on Karpenter's benchmark shape and
# prints pods per second and nodes opened at each size. Figures go in docs/performance.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require cargo "install Rust with rustup (https://rustup.rs), then run this again"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOKER_CACHE/target}"
log "building and running the scheduling benchmark (the first release build takes ~15 min on 2 cores)"
cd "$REPO_ROOT"
cargo bench --locked --bench scheduling -- --warm-up-time 1 --measurement-time "${MEASUREMENT_SECONDS:-5}" 2>&1 |
  grep -E '^(karpenter-shape|real-catalog)|time:|thrpt:'
