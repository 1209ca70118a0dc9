#!/usr/bin/env bash
# The chaos soak at length: `tests/chaos.rs` for N cycles (default 30) on an environment of its
# own (state .local/bench, its own ports), with the debug build the tests use. Each cycle bursts
# 100-250 pods and scales down while the leader is killed with SIGKILL at a random moment and EC2
# answers with capacity errors, throttling, server errors and a lost CreateFleet response; the
# middle cycle restarts the apiserver. Prints the tally (instances leaked and duplicated, pods
# lost and not Running, PodDisruptionBudget violations, restarts stoker caused); every figure
# must be zero. STOKER_CHAOS_SEED repeats a run. Figures go in docs/reliability.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cycles="${1:-30}"
bench_environment
log "chaos soak: $cycles cycles (log of each controller in ${TMPDIR:-/tmp}/stoker-chaos-*.log)"
cd "$REPO_ROOT"
STOKER_CHAOS_CYCLES="$cycles" cargo test --locked --test chaos -- --include-ignored --nocapture 2>&1 |
  grep --line-buffered -E '^(chaos soak|cycle [0-9]+|CreateFleet calls|leaked|stoker-chaos-. exited|test |thread )'
