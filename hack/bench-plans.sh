#!/usr/bin/env bash
# Runs the plan-cost benchmark (criterion, release build): for each workload mix and NodePool
# shape on the real us-east-1 catalog, the plan's $/hour, nodes, the types it opens, its ratio to
# the lower bound, and the solve time. Figures go in docs/performance.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require cargo "install Rust with rustup (https://rustup.rs), then run this again"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOKER_CACHE/target}"
log "building and running the plan-cost benchmark (the first release build takes ~15 min on 2 cores)"
cd "$REPO_ROOT"
cargo bench --locked --bench plans -- --warm-up-time 1 --measurement-time "${MEASUREMENT_SECONDS:-3}" 2>&1 |
  grep -E '^mix=|^plans/|time:'
