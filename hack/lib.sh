# Shared helpers for the hack/ scripts. Source it; do not run it.
#
# Everything expensive (Go builds, the Python venv) lives in $STOKER_CACHE, keyed by version, so a
# fresh clone reuses it. Runtime state (logs, pids, certificates, kubeconfig) lives in
# $STOKER_STATE so several checkouts do not fight over one directory.

set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"

STOKER_CACHE="${STOKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stoker}"
STOKER_STATE="${STOKER_STATE:-$REPO_ROOT/.local}"
K8S_BIN="$STOKER_CACHE/kubernetes-$KUBERNETES_VERSION"
ETCD_BIN="$STOKER_CACHE/etcd-$ETCD_VERSION"
KWOK_BIN="$STOKER_CACHE/kwok-$KWOK_VERSION-stages-$KWOK_STAGES_REVISION"
HELM_BIN="$STOKER_CACHE/helm-$HELM_VERSION"
MOTO_VENV="$STOKER_CACHE/moto-$MOTO_VERSION"
PRICE_LIST_RECORDINGS="$STOKER_CACHE/price-list-recordings-$PRICE_LIST_RECORDINGS_VERSION"
IAM_SIMULATOR="$STOKER_CACHE/iam-simulate-$IAM_SIMULATE_VERSION-$IAM_DATA_VERSION"
CFN_LINT_VENV="$STOKER_CACHE/cfn-lint-$CFN_LINT_VERSION"

# Loopback ports; override with the environment when they clash with something else.
ETCD_PORT="${STOKER_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${STOKER_ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${STOKER_APISERVER_PORT:-26443}"
MOTO_PORT="${STOKER_MOTO_PORT:-25000}"
KWOK_PORT="${STOKER_KWOK_PORT:-20247}"
CLUSTER_NAME="${STOKER_CLUSTER_NAME:-stoker-local}"
AWS_REGION_LOCAL="${STOKER_REGION:-us-east-1}"
# A second region, seeded alike, where instance types are priced in a different order (tests of
# regional prices).
AWS_REGION_OTHER="${STOKER_OTHER_REGION:-ap-south-1}"

export KUBECONFIG_LOCAL="$STOKER_STATE/kubeconfig"
PIDS="$STOKER_STATE/pids"
LOGS="$STOKER_STATE/logs"

# running NAME: whether the process started as NAME is alive.
running() { [[ -f $PIDS/$1.pid ]] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

# start NAME COMMAND...: run COMMAND in the background, logging to $LOGS/NAME.log; local-down
# stops it.
start() {
  local name=$1; shift
  mkdir -p "$PIDS" "$LOGS"
  nohup "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

log() { printf '\033[1;34m[stoker]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[stoker] error:\033[0m %s\n' "$*" >&2; exit 1; }

# require TOOL HINT: fail with one line saying what to install.
require() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"
}

# port_free PORT NAME: fail when something else already listens on PORT.
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "port $1 (for $2) is already in use: stop what listens there (hack/local-down.sh stops ours) or set the STOKER_*_PORT variable"
  fi
}

# start_apiserver: kube-apiserver on $APISERVER_PORT over the running etcd, with the PKI in
# $STOKER_STATE/pki; returns once it is ready. local-up.sh and restart-apiserver.sh use it.
start_apiserver() {
  local pki="$STOKER_STATE/pki"
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
    --allow-privileged --profiling=false
  wait_for kube-apiserver 90 "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_LOCAL" get --raw /readyz
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND until it succeeds.
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "$what did not become ready within ${seconds}s (logs in $STOKER_STATE/logs)"
    fi
    sleep 0.2
  done
}

# with_heartbeat MESSAGE COMMAND...: run a long command, printing a line every 30 s so a cold build
# does not look hung; its output goes to a log file that is shown if it fails.
with_heartbeat() {
  local message=$1; shift
  local logfile
  logfile="$(mktemp "${TMPDIR:-/tmp}/stoker-build.XXXXXX")"
  log "$message (log: $logfile)"
  "$@" >"$logfile" 2>&1 &
  local pid=$! started=$SECONDS next=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    if ((SECONDS >= next)) && kill -0 "$pid" 2>/dev/null; then
      log "  ... still working: $message ($((SECONDS - started))s, $(wc -l <"$logfile") log lines)"
      next=$((SECONDS + 30))
    fi
  done
  if ! wait "$pid"; then
    tail -n 40 "$logfile" >&2
    die "$message failed; full log in $logfile"
  fi
  log "  done in $((SECONDS - started))s: $message"
  rm -f "$logfile"
}

# bench_environment: start a local environment of its own (state .local/bench, its own ports)
# that stops on exit, build stoker (STOKER_PROFILE=release, bench or dist for an optimized build;
# default the debug build the tests share) and set $stoker to the binary; STOKER_BIN names a
# binary to run instead (an earlier commit's, for a before and after). For the hack/bench-*.sh
# scripts.
bench_environment() {
  export STOKER_STATE="$REPO_ROOT/.local/bench"
  export STOKER_ETCD_PORT=23792 STOKER_ETCD_PEER_PORT=23802 STOKER_APISERVER_PORT=26445 \
    STOKER_MOTO_PORT=25002 STOKER_KWOK_PORT=20249
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOKER_CACHE/target}"
  PIDS="$STOKER_STATE/pids" LOGS="$STOKER_STATE/logs"
  trap '"$HACK_DIR/local-down.sh"' EXIT
  "$HACK_DIR/local-up.sh"
  # shellcheck disable=SC1091
  source "$STOKER_STATE/env"
  if [[ -n ${STOKER_BIN:-} ]]; then
    stoker=$STOKER_BIN
    log "running $stoker ($("$stoker" --version))"
    return 0
  fi
  local profile="${STOKER_PROFILE:-dev}"
  log "building stoker ($profile profile)"
  # STOKER_CARGO_FLAGS adds cargo flags, e.g. --no-default-features for the system allocator.
  # shellcheck disable=SC2086
  (cd "$REPO_ROOT" && cargo build --locked --profile "$profile" --bin stoker ${STOKER_CARGO_FLAGS:-})
  # Cargo's directory for a profile: dev's is debug, bench shares release's, any other its own name.
  local directory=$profile
  case $profile in dev) directory=debug ;; bench) directory=release ;; esac
  stoker="$CARGO_TARGET_DIR/$directory/stoker"
}

# go_module_field MODULE@VERSION FIELD: the FIELD (Dir, Zip, GoMod) that `go mod download -json`
# reports for the module after fetching it (it honours GOPROXY and verifies what it fetches);
# empty when there is none. The go command's complaint is not fatal (a module asking for a newer
# Go than the local one still downloads); callers check that what they need is there.
go_module_field() {
  { (cd "$STOKER_CACHE" && go mod download -json "$1") || true; } |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$2"
}

# build_go_programs MODULE VERSION DIR PACKAGE...: builds the module's programs at that version
# into DIR/bin, once. The module is built as the main module (a copy of what go mod download
# fetched), so its own replace and exclude directives apply, which `go install` refuses.
build_go_programs() {
  local module=$1 version=$2 dir=$3 source
  shift 3
  [[ -f $dir/.complete ]] && return 0
  source=$(go_module_field "$module@$version" Dir)
  [[ -d $source ]] || die "go mod download did not fetch $module@$version"
  rm -rf "$dir" && mkdir -p "$dir/bin"
  cp -r "$source" "$dir/src" && chmod -R u+w "$dir/src"
  (cd "$dir/src" && GOFLAGS=-mod=mod go build -trimpath -o "$dir/bin/" "$@")
  rm -rf "$dir/src"
  touch "$dir/.complete"
}

# fetch_karpenter_module: sigs.k8s.io/karpenter at KARPENTER_CORE_VERSION, unpacked into the cache
# where its tests and binaries can be built (the module cache itself is read-only); sets
# KARPENTER_MODULE to its directory, its go.mod lowered to the local Go.
fetch_karpenter_module() {
  local dir="$STOKER_CACHE/karpenter-$KARPENTER_CORE_VERSION" zip
  if [[ ! -f $dir/.complete ]]; then
    log "fetching sigs.k8s.io/karpenter@$KARPENTER_CORE_VERSION with go mod download"
    rm -rf "$dir" && mkdir -p "$dir"
    zip=$(go_module_field "sigs.k8s.io/karpenter@$KARPENTER_CORE_VERSION" Zip)
    [[ -f $zip ]] || die "go mod download did not fetch sigs.k8s.io/karpenter@$KARPENTER_CORE_VERSION"
    (cd "$dir" && unzip -q "$zip" && chmod -R u+w .)
    touch "$dir/.complete"
  fi
  export KARPENTER_MODULE="$dir/sigs.k8s.io/karpenter@$KARPENTER_CORE_VERSION"
  sed -i -E "s/^go [0-9.]+$/go $(go env GOVERSION | sed 's/^go//')/" "$KARPENTER_MODULE/go.mod"
}

# start_stoker [DELAY]: stoker's CRDs, the example EC2NodeClass, the controller ($stoker, from
# bench_environment) and the node simulator (nodes register DELAY after launch, default 1s);
# returns once the EC2NodeClass is Ready. STOKER_WRAPPER runs the controller under a profiler, e.g.
# STOKER_WRAPPER="heaptrack -o /tmp/stoker" with STOKER_CARGO_FLAGS=--no-default-features, so
# heaptrack sees the system allocator (the RSS figures are then the profiler's).
start_stoker() {
  "$stoker" crds | kubectl apply --server-side --field-manager stoker -f - >/dev/null
  kubectl wait --for condition=Established --timeout 60s crd/nodeclaims.stoker.dev >/dev/null
  kubectl apply -f "$REPO_ROOT/examples/ec2nodeclass.yaml" >/dev/null
  # shellcheck disable=SC2086
  start stoker env LOG_FORMAT=json LEADER_ELECT=false METRICS_ADDRESS=127.0.0.1:0 HEALTH_ADDRESS=127.0.0.1:0 \
    ${STOKER_WRAPPER:-} "$stoker" controller
  start node-simulator "$stoker" node-simulator --delay "${1:-1s}"
  wait_for "the EC2NodeClass" 120 bash -c \
    "kubectl get ec2nodeclass default -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
}

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (getconf CLK_TCK).
cpu_ticks() { awk '{ sub(/.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }

# perf_nodepool TOOL [DELAY] [spot] [ZONES]: the NodePool of Karpenter's performance suite (`perf`:
# on-demand, amd64, types of fewer than RACE_MAX_CPU vCPUs; WhenEmptyOrUnderutilized,
# consolidateAfter 30s, budget 100%) for stoker, or for karpenter with its KWOKNodeClass (nodes
# register DELAY after launch, default 1s). With `spot`, a second pool `perf-spot` alike but for
# spot capacity, weighted above it (weight 10). ZONES ("a, b"), when given, holds the pools to
# those zones.
#
# The suite holds its kwok pools to `karpenter.kwok.sh/instance-size` below 32 (its suite_test.go),
# which for kwok's own types is their vCPU count; for AWS type names kwok's provider puts the size
# word there (large, 4xlarge), which no number compares with, so the same bound is taken on the
# vCPU labels: kwok's `instance-cpu` for Karpenter, `karpenter.k8s.aws/instance-cpu` for stoker.
# RACE_MAX_CPU defaults to the suite's 32; set empty, the pools take every size (as the race's
# runs before 2026-12-07 did).
perf_nodepool() {
  local tool=$1 delay=${2:-1s} with_spot=${3:-} zones=${4:-}
  local narrowed="" max_cpu=${RACE_MAX_CPU-32} cpu_key=karpenter.k8s.aws/instance-cpu
  [[ -n $zones ]] && narrowed=", {key: topology.kubernetes.io/zone, operator: In, values: [$zones]}"
  [[ $tool == karpenter ]] && cpu_key=karpenter.kwok.sh/instance-cpu
  [[ -n $max_cpu ]] && narrowed+=", {key: $cpu_key, operator: Lt, values: [\"$max_cpu\"]}"
  local disruption='{consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 30s, budgets: [{nodes: "100%"}]}'
  local group=stoker.dev kind=EC2NodeClass
  if [[ $tool == karpenter ]]; then
    group=karpenter.kwok.sh kind=KWOKNodeClass
    cat <<YAML
apiVersion: karpenter.kwok.sh/v1alpha1
kind: KWOKNodeClass
metadata: {name: default}
spec: {nodeRegistrationDelay: $delay}
YAML
  fi
  local api=stoker.dev/v1alpha1
  [[ $tool == karpenter ]] && api=karpenter.sh/v1
  perf_pool_yaml() { # NAME CAPACITY_TYPE [WEIGHT]
    cat <<YAML
---
apiVersion: $api
kind: NodePool
metadata: {name: $1}
spec:
  ${3:+weight: $3}
  template:
    spec:
      nodeClassRef: {group: $group, kind: $kind, name: default}
      requirements: [{key: karpenter.sh/capacity-type, operator: In, values: [$2]}, {key: kubernetes.io/arch, operator: In, values: [amd64]}$narrowed]
  disruption: $disruption
YAML
  }
  perf_pool_yaml perf on-demand
  [[ $with_spot == spot ]] && perf_pool_yaml perf-spot spot 10
  return 0
}

# perf_deployment NAME REPLICAS CPU MEMORY [SPREAD...]: a Deployment of pause pods; SPREAD adds
# `hostname` (topology spread, max skew 1), `zone` (the same over zones) or `anti-affinity`
# (one pod per node), each over the Deployment's own pods.
perf_deployment() {
  local name=$1 replicas=$2 cpu=$3 memory=$4 constraints="" affinity=""
  shift 4
  for extra in "$@"; do
    case $extra in
      hostname | zone)
        local key=kubernetes.io/hostname
        [[ $extra == zone ]] && key=topology.kubernetes.io/zone
        constraints+="{maxSkew: 1, topologyKey: $key, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: $name}}}, "
        ;;
      anti-affinity)
        affinity="affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: $name}}}]}}"
        ;;
    esac
  done
  cat <<YAML
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: $name, namespace: default}
spec:
  replicas: $replicas
  selector: {matchLabels: {app: $name}}
  template:
    metadata: {labels: {app: $name}}
    spec:
      terminationGracePeriodSeconds: 0
      topologySpreadConstraints: [${constraints%, }]
      $affinity
      containers:
        - name: c
          image: registry.k8s.io/pause:3.10
          resources: {requests: {cpu: $cpu, memory: $memory}}
YAML
}

# create_burst N [NODE_SELECTOR]: a Deployment `burst` of N pause pods (100m, 128Mi) in default,
# with an optional nodeSelector in flow YAML (`{stoker.dev/nodepool: spot}`). For the benchmarks.
create_burst() {
  kubectl apply -f - >/dev/null <<EOF2
apiVersion: apps/v1
kind: Deployment
metadata: {name: burst, namespace: default}
spec:
  replicas: $1
  selector: {matchLabels: {app: burst}}
  template:
    metadata: {labels: {app: burst}}
    spec:
      terminationGracePeriodSeconds: 0
      nodeSelector: ${2:-{\}}
      containers: [{name: c, image: registry.k8s.io/pause:3.10, resources: {requests: {cpu: 100m, memory: 128Mi}}}]
EOF2
}

# wait_burst_running N: wait (at most 600 s) until N pods of the burst run.
wait_burst_running() {
  local deadline=$((SECONDS + 600))
  until [[ $(kubectl get pods -l app=burst --field-selector status.phase=Running --no-headers 2>/dev/null | wc -l) -ge $1 ]]; do
    ((SECONDS < deadline)) || die "the burst did not run within 600s (log: $LOGS/stoker.log)"
    sleep 2
  done
}

# install_venv DIR PACKAGE...: installs Python packages from PyPI into a virtualenv at DIR, once.
# A virtualenv cannot be moved (its scripts name its path), so it is built in place and marked
# complete at the end; an interrupted install is thrown away and redone.
install_venv() {
  local dir=$1; shift
  [[ -f $dir/.complete ]] && return 0
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  touch "$dir/.complete"
}
