#!/usr/bin/env bash
# Sets up and runs every test: builds the local control plane and the EC2 emulator (cached in
# $STOKER_CACHE), starts three local environments on their own ports and state directories,
# runs the unit, property and integration tests in three lanes side by side (the integration
# tests mostly wait on the controllers' timers, so three lanes share two cores well; each lane
# has its own control plane and emulator, so they never see each other's objects), checks every
# AWS call the lanes recorded against the IAM policy, builds the static release binaries and the
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

# lane_environment N: sets `environment` to lane N's state directory and ports (lane 1 on the
# base ports, each next lane two up), so the lanes never disturb each other or an environment
# started by hack/demo.sh.
lane_environment() {
  local offset=$((2 * ($1 - 1))) suffix=""
  if (($1 > 1)); then suffix="-$1"; fi
  environment=(STOKER_STATE="$REPO_ROOT/.local/test$suffix" STOKER_ETCD_PORT=$((23791 + offset))
    STOKER_ETCD_PEER_PORT=$((23801 + offset)) STOKER_APISERVER_PORT=$((26444 + offset))
    STOKER_MOTO_PORT=$((25001 + offset)) STOKER_KWOK_PORT=$((20248 + offset)))
}
lanes=(1 2 3)
trap 'for n in "${lanes[@]}"; do lane_environment "$n"; env "${environment[@]}" "$HACK_DIR/local-down.sh"; done' EXIT
for n in "${lanes[@]}"; do
  lane_environment "$n"
  env "${environment[@]}" "$HACK_DIR/local-up.sh"
done

# Lanes 2 and 3 take these integration tests, split by measured time (docs/performance.md) so
# the three lanes take about as long; the first takes the unit tests, benches and every other
# test file, so a new one runs there without being listed. The IAM check runs last, over every
# lane's calls.
declare -A lane_tests=(
  [2]="chaos repair nodepool_schedules leader_election drift expiration capacity_blocks"
  [3]="consolidation warmpool capacity_buffer termination static_pools interruption"
)
first=(--lib --bins --benches)
for file in "$REPO_ROOT"/tests/*.rs; do
  name=$(basename "$file" .rs)
  [[ $name == iam_recorded_calls || " ${lane_tests[*]} " == *" $name "* ]] && continue
  first+=(--test "$name")
done

# lane N CARGO-TEST-ARGS...: the tests with lane N's environment.
lane() {
  lane_environment "$1"
  shift
  # shellcheck disable=SC1091
  (export "${environment[@]}" && source "$STOKER_STATE/env" && cd "$REPO_ROOT" &&
    cargo test --locked "$@" -- --include-ignored)
}

log "running every test in ${#lanes[@]} lanes (unit, property, integration against the local environments)"
declare -A lane_pid
for n in "${!lane_tests[@]}"; do
  args=()
  for name in ${lane_tests[$n]}; do args+=(--test "$name"); done
  lane "$n" "${args[@]}" >"$REPO_ROOT/.local/test-$n/tests.log" 2>&1 &
  lane_pid[$n]=$!
done
failed=()
lane 1 "${first[@]}" || failed+=(1)
for n in "${!lane_pid[@]}"; do
  wait "${lane_pid[$n]}" || failed+=("$n")
  log "lane $n's output ($REPO_ROOT/.local/test-$n/tests.log):"
  cat "$REPO_ROOT/.local/test-$n/tests.log"
done
((${#failed[@]} == 0)) || die "tests failed in lane(s) ${failed[*]}"

log "checking every AWS call the tests recorded against the IAM policy"
calls="$REPO_ROOT/.local/test/aws-calls-all.jsonl"
: >"$calls"
for n in "${lanes[@]}"; do
  # shellcheck disable=SC1091
  (lane_environment "$n" && export "${environment[@]}" && source "$STOKER_STATE/env" &&
    cat "$STOKER_AWS_CALL_LOG") >>"$calls"
done
# shellcheck disable=SC1091
(lane_environment 1 && export "${environment[@]}" && source "$STOKER_STATE/env" && cd "$REPO_ROOT" &&
  STOKER_AWS_CALL_LOG="$calls" cargo test --locked --test iam_recorded_calls -- --include-ignored)
log "cross-compiling the static binaries and checking each is one (dev builds: the release profile takes far longer)"
STOKER_RELEASE_PROFILE=dev "$HACK_DIR/build-release.sh" amd64 arm64
log "building the multi-arch image from the Dockerfile on a stand-in base, checking it, running it with runc"
STOKER_IMAGE_BASE=stand-in "$HACK_DIR/build-image.sh"
log "all tests passed in $((SECONDS - started))s"
