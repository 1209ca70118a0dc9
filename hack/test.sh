#!/usr/bin/env bash
# Sets up and runs every test: builds the local control plane and the EC2 emulator (cached in
# $STOKER_CACHE), starts two local environments on their own ports and state directories, runs
# the unit, property and integration tests in two lanes side by side (the integration tests
# mostly wait on the controllers' timers, so two lanes share two cores well; each lane has its
# own control plane and emulator, so they never see each other's objects), checks every AWS
# call both lanes recorded against the IAM policy, builds the static release binaries and the
# multi-arch image (checked, and run with runc), and stops everything it started, whatever
# happens.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require cargo "install Rust with rustup (https://rustup.rs), then run this again"
started=$SECONDS

# Compiled crates live outside the clone so a fresh clone (CI) reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOKER_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

"$HACK_DIR/build-control-plane.sh"
"$HACK_DIR/install-emulator.sh"
"$HACK_DIR/install-aws-checkers.sh"
log "compiling stoker and its tests (cold: about 10 min on 2 cores; cached in $CARGO_TARGET_DIR)"
(cd "$REPO_ROOT" && cargo build --tests --test iam_recorded_calls --benches --locked)

# Each lane's environment: its own state directory and ports, so they never disturb each other
# or one started by hack/demo.sh.
lane_1=(STOKER_STATE="$REPO_ROOT/.local/test" STOKER_ETCD_PORT=23791 STOKER_ETCD_PEER_PORT=23801
  STOKER_APISERVER_PORT=26444 STOKER_MOTO_PORT=25001 STOKER_KWOK_PORT=20248)
lane_2=(STOKER_STATE="$REPO_ROOT/.local/test-2" STOKER_ETCD_PORT=23793 STOKER_ETCD_PEER_PORT=23803
  STOKER_APISERVER_PORT=26446 STOKER_MOTO_PORT=25003 STOKER_KWOK_PORT=20250)
trap 'env "${lane_1[@]}" "$HACK_DIR/local-down.sh"; env "${lane_2[@]}" "$HACK_DIR/local-down.sh"' EXIT
env "${lane_1[@]}" "$HACK_DIR/local-up.sh"
env "${lane_2[@]}" "$HACK_DIR/local-up.sh"

# The second lane takes these integration tests (about half the integration time, measured);
# the first takes the unit tests, benches and every other test file, so a new one runs there
# without being listed. The IAM check runs last, over both lanes' calls.
second=(consolidation chaos capacity_buffer termination repair nodepool_schedules)
first=(--lib --bins --benches)
for file in "$REPO_ROOT"/tests/*.rs; do
  name=$(basename "$file" .rs)
  [[ $name == iam_recorded_calls || " ${second[*]} " == *" $name "* ]] && continue
  first+=(--test "$name")
done
second_args=()
for name in "${second[@]}"; do second_args+=(--test "$name"); done

# lane ENV-NAME CARGO-TEST-ARGS...: the tests with that lane's environment.
lane() {
  local -n environment=$1
  shift
  # shellcheck disable=SC1091
  (export "${environment[@]}" && source "$STOKER_STATE/env" && cd "$REPO_ROOT" &&
    cargo test --locked "$@" -- --include-ignored)
}

log "running every test in two lanes (unit, property, integration against the local environments)"
second_log="$REPO_ROOT/.local/test-2/tests.log"
lane lane_2 "${second_args[@]}" >"$second_log" 2>&1 &
second_pid=$!
first_status=0
lane lane_1 "${first[@]}" || first_status=$?
second_status=0
wait "$second_pid" || second_status=$?
log "the second lane's output ($second_log):"
cat "$second_log"
((first_status == 0)) || die "tests failed in the first lane"
((second_status == 0)) || die "tests failed in the second lane"

log "checking every AWS call the tests recorded against the IAM policy"
calls="$REPO_ROOT/.local/test/aws-calls-all.jsonl"
(
  export "${lane_1[@]}" && source "$STOKER_STATE/env"
  first_calls=$STOKER_AWS_CALL_LOG
  export "${lane_2[@]}" && source "$STOKER_STATE/env"
  cat "$first_calls" "$STOKER_AWS_CALL_LOG" >"$calls"
  export "${lane_1[@]}" && source "$STOKER_STATE/env"
  cd "$REPO_ROOT" && STOKER_AWS_CALL_LOG="$calls" cargo test --locked --test iam_recorded_calls -- --include-ignored
)
log "cross-compiling the static binaries and checking each is one (dev builds: the release profile takes far longer)"
STOKER_RELEASE_PROFILE=dev "$HACK_DIR/build-release.sh" amd64 arm64
log "building the multi-arch image from the Dockerfile on a stand-in base, checking it, running it with runc"
STOKER_IMAGE_BASE=stand-in "$HACK_DIR/build-image.sh"
log "all tests passed in $((SECONDS - started))s"
