#!/usr/bin/env bash
# Sets up and runs every test: builds the local control plane and the EC2 emulator (cached in
# $STOKER_CACHE), starts them on their own ports and state directory, runs the unit, property and
# integration tests, and stops everything it started, whatever happens.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require cargo "install Rust with rustup (https://rustup.rs), then run this again"
started=$SECONDS

# Tests get their own environment so they never disturb one started by hack/demo.sh.
export STOKER_STATE="$REPO_ROOT/.local/test"
export STOKER_ETCD_PORT=23791 STOKER_ETCD_PEER_PORT=23801 STOKER_APISERVER_PORT=26444 \
  STOKER_MOTO_PORT=25001 STOKER_KWOK_PORT=20248
# Compiled crates live outside the clone so a fresh clone (CI) reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOKER_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

"$HACK_DIR/build-control-plane.sh"
"$HACK_DIR/install-emulator.sh"
"$HACK_DIR/install-aws-checkers.sh"
log "compiling stoker and its tests (cold: about 10 min on 2 cores; cached in $CARGO_TARGET_DIR)"
(cd "$REPO_ROOT" && cargo build --tests --test iam_recorded_calls --benches --locked)

trap '"$HACK_DIR/local-down.sh"' EXIT
STOKER_STATE="$STOKER_STATE" "$HACK_DIR/local-up.sh"
# shellcheck disable=SC1091
source "$STOKER_STATE/env"

log "running every test (unit, property, integration against the local environment)"
cd "$REPO_ROOT"
cargo test --locked --all-targets -- --include-ignored
log "checking every AWS call the tests recorded against the IAM policy"
cargo test --locked --test iam_recorded_calls -- --include-ignored
log "cross-compiling the static arm64 binary and checking it is one (a dev build: the release profile takes far longer)"
STOKER_RELEASE_PROFILE=dev "$HACK_DIR/build-release.sh" arm64
log "all tests passed in $((SECONDS - started))s"
