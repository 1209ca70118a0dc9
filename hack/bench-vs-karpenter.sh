#!/usr/bin/env bash
# The race: Karpenter's own performance scenarios (test/suites/performance in
# sigs.k8s.io/karpenter) run through Karpenter and then through stoker, each on a clean local
# control plane, with the same instance types, prices, zones and node registration delay.
#
#   hack/bench-vs-karpenter.sh [SCENARIO...]     (basic, hostname-spread, wide, spot; default: all)
#   TOOLS=stoker hack/bench-vs-karpenter.sh basic (one tool; default TOOLS="karpenter stoker")
#
# Karpenter is its kwok cloud provider (the module at KARPENTER_CORE_VERSION, fetched with go mod
# download, built here with hack/karpenter-head-to-head/refusing-kwok/main.go, which is kwok's
# provider unchanged unless spot capacity is refused) run out of cluster with its CRDs; its
# instance types are the ones stoker's controller prices for the local EC2NodeClass (`stoker
# kwok-instance-types`), so both choose among the same types, allocatable, prices, zones and
# capacity types. stoker runs against the EC2
# emulator with its node simulator; both tools' nodes register REGISTRATION_DELAY (default 1s)
# after launch (the simulator checks every second, so stoker's nodes come up to 1 s later).
#
# Every scenario: one NodePool (on-demand, amd64, types of fewer than 32 vCPUs as the suite holds
# its kwok pools to, see perf_nodepool in lib.sh; WhenEmptyOrUnderutilized, consolidateAfter 30s,
# budget 100%), Deployments created, then scaled in. `spot` is basic's Deployments over a spot
# pool weighted above that on-demand one, with spot capacity refused for every other instance
# type (in name order) that has a spot offering: by the EC2 emulator for stoker, by the wrapped
# kwok provider for Karpenter, each launch answered alike (the refused offerings fail, the others
# may launch; see the two files). For each tool: creation → all pods Running;
# nodes, $/h and reserved CPU and memory utilization after scale-out; after the scale-in, the time
# to the last NodeClaim change (consolidation is over after QUIET_SECONDS, default 300, without
# one), the time from which $/h stayed within 1% of where it ended, above or below (traced at
# every change; race_table.py reads it from the trace), and
# the same figures; the controller's peak RSS and CPU seconds over the scenario, which
# lasts at least WINDOW_SECONDS (default 600) from the Deployments' creation for every tool, so
# a tool that stops consolidating early is not measured over a shorter run. For
# stoker also the $/h `stoker plan` gives for the scaled-in pods from scratch, which
# consolidation should come close to. The table at the end goes in docs/performance.md; raw
# figures stay in $STOKER_STATE/race.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require go "install Go 1.26 or newer, then run this again"
scenarios=("${@:-basic hostname-spread wide spot}")
read -r -a scenarios <<<"${scenarios[*]}"
for scenario in "${scenarios[@]}"; do
  [[ $scenario =~ ^(basic|hostname-spread|wide|spot)$ ]] || die "unknown scenario $scenario (basic, hostname-spread, wide, spot)"
done
read -r -a tools <<<"${TOOLS:-karpenter stoker}"
for tool in "${tools[@]}"; do
  [[ $tool =~ ^(karpenter|stoker)$ ]] || die "unknown tool $tool (karpenter, stoker)"
done
delay="${REGISTRATION_DELAY:-1s}"
quiet="${QUIET_SECONDS:-300}"
window="${WINDOW_SECONDS:-600}"
# The dist profile, the build the release binaries and the image ship (fat LTO: its code is 12%
# smaller than release's, and the code the controller maps is part of its resident memory). Not
# bench: that profile leaves the AWS SDKs unoptimized for build time, which costs the controller
# CPU on every EC2 reply it parses.
STOKER_PROFILE="${STOKER_PROFILE:-dist}"
bench_environment
results="$STOKER_STATE/race"
rm -rf "$results" && mkdir -p "$results"

# Karpenter's kwok provider, built once per version and wrapper.
main="$REPO_ROOT/hack/karpenter-head-to-head/refusing-kwok/main.go"
karpenter="$STOKER_CACHE/karpenter-kwok-$KARPENTER_CORE_VERSION-$(sha256sum "$main" | cut -c1-12)"
fetch_karpenter_module
module="$KARPENTER_MODULE"
if [[ ! -x $karpenter ]]; then
  mkdir -p "$module/kwok/refusing" && cp "$main" "$module/kwok/refusing/main.go"
  with_heartbeat "building Karpenter's kwok provider $KARPENTER_CORE_VERSION" \
    env -C "$module" GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o "$karpenter.tmp" ./kwok/refusing
  mv "$karpenter.tmp" "$karpenter"
fi

# What stoker's controller sees, for Karpenter.
log "exporting the instance types stoker's controller prices for the local EC2NodeClass"
start_stoker "$delay"
"$stoker" kwok-instance-types --nodeclass default >"$results/instance-types.json"
log "  $(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$results/instance-types.json") instance types"
# The spot scenario's refusals: every other type, in name order, of those offered as spot.
python3 - "$results/instance-types.json" >"$results/refused-spot-types" <<'PY'
import json, sys
spot = sorted(t["name"] for t in json.load(open(sys.argv[1]))
              if any(r["key"] == "karpenter.sh/capacity-type" and "spot" in r["values"]
                     for o in t["offerings"] for r in o["Requirements"]))
print("\n".join(spot[::2]))
PY
log "  spot capacity refused for $(wc -l <"$results/refused-spot-types") of them in the spot scenario"

# The scenarios, as Karpenter's performance suite defines them: scenario_NAME prints the
# Deployments to scale out to; the scale-in is "NAME=REPLICAS ..." (scale_in_two_apps, or
# scale_in_wide for wide).
scenario_basic() {
  perf_deployment small-resource-app 500 900m 3100Mi
  perf_deployment large-resource-app 500 3500m 28Gi
}
scenario_spot() { scenario_basic; }
scenario_hostname-spread() {
  perf_deployment small-resource-app 500 900m 3100Mi hostname
  perf_deployment large-resource-app 500 3500m 28Gi
}
scale_in_two_apps="small-resource-app=350 large-resource-app=350"  # basic, hostname-spread, spot
# wide: 30 Deployments, 1,000 pods → 700; every one spread over zones, the first three also one
# pod per node, the next three also spread over nodes.
wide_cpu=(240m 450m 650m 900m 1400m 1900m 2400m 2800m 3300m 3700m 2300m 900m 1300m 2800m 1800m
  1850m 3300m 3800m 225m 450m 700m 900m 1300m 1800m 2400m 2800m 3400m 3800m 3300m 2800m)
wide_memory=(300Mi 400Mi 700Mi 1Gi 2Gi 4Gi 8Gi 4Gi 16Gi 10Gi 64Gi 30Gi 32Gi 32Gi 30Gi 20Gi 30Gi
  300Mi 500Mi 750Mi 1Gi 2Gi 4Gi 8Gi 16Gi 32Gi 28Gi 64Gi 13Gi 24Gi)
scenario_wide() {
  for i in $(seq 0 29); do
    local extra=zone
    ((i < 3)) && extra="zone anti-affinity"
    ((i >= 3 && i < 6)) && extra="zone hostname"
    # shellcheck disable=SC2086 # extra holds separate words
    perf_deployment "wide-deployment-$((i + 1))" "$((i < 20 ? 35 : 30))" "${wide_cpu[$i]}" "${wide_memory[$i]}" $extra
  done
}
scale_in_wide() { for i in $(seq 1 30); do printf 'wide-deployment-%d=%d ' "$i" "$((i <= 20 ? 25 : 20))"; done; }

running_pods() { kubectl get pods -n default --field-selector status.phase=Running --no-headers 2>/dev/null | wc -l; }
figures() { # TOOL LABEL: the pools' figures as JSON (the human line goes to the log)
  local selector="stoker.dev/nodepool in (perf,perf-spot)"
  [[ $1 == karpenter ]] && selector="karpenter.sh/nodepool in (perf,perf-spot)"
  python3 "$HACK_DIR/cluster_figures.py" "$selector" "$results/instance-types.json" "$1 $2" >"$results/figures.tmp"
  log "  $(sed -n 1p "$results/figures.tmp")"
  sed -n 2p "$results/figures.tmp"
}
cost_now() { # TOOL: the pools' $/h now, quietly
  figures "$1" "" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["cost_per_hour"])'
}

# plan_from_scratch SCENARIO "NAME=REPLICAS ..." [spot]: the $/h of `stoker plan` for the
# scenario's Deployments at their scaled-in replicas, over the same NodePools held to the zones
# the race's instance types are offered in (offline, `stoker plan` takes every zone of its
# catalog, six in us-east-1 where the emulator's subnets are in three: pods spread over zones
# would be planned over six).
plan_from_scratch() {
  local zones
  zones=$(python3 - "$results/instance-types.json" <<'PY'
import json, sys
zones = {zone for kind in json.load(open(sys.argv[1])) for offering in kind["offerings"]
         for requirement in offering["Requirements"] if requirement["key"] == "topology.kubernetes.io/zone"
         for zone in requirement["values"]}
print(", ".join(sorted(zones)))
PY
  )
  python3 - "$results/$1-deployments.yaml" "$2" >"$results/$1-scaled-in.yaml" <<'PY'
import re, sys
replicas = dict(change.split("=") for change in sys.argv[2].split())
documents = open(sys.argv[1]).read().split("\n---\n")
for document in documents:
    name = re.search(r"metadata: \{name: ([^,]+),", document).group(1)
    print("---\n" + re.sub(r"^  replicas: \d+", f"  replicas: {replicas[name]}", document.strip("-\n"), flags=re.M))
PY
  "$stoker" plan -o json -f "$REPO_ROOT/examples/ec2nodeclass.yaml" -f "$results/$1-scaled-in.yaml" \
    -f <(perf_nodepool stoker "$delay" "${3:-}" "$zones") |
    python3 -c 'import json, sys; print("%.3f" % json.load(sys.stdin)["totals"]["pricePerHour"])'
}

# race TOOL SCENARIO: one run on a clean control plane; appends its figures to results.jsonl.
race() {
  local tool=$1 scenario=$2 pid nodeclaims=nodeclaims.stoker.dev spot="" refusals=/dev/null
  if [[ $scenario == spot ]]; then
    spot=spot refusals="$results/refused-spot-types"
  fi
  "$HACK_DIR/local-down.sh" 2>/dev/null
  # Both tools refuse spot capacity as this scenario asks (none from /dev/null).
  STOKER_REFUSED_SPOT_TYPES="$refusals" "$HACK_DIR/local-up.sh" 2>/dev/null
  # shellcheck disable=SC1091
  source "$STOKER_STATE/env"
  if [[ $tool == karpenter ]]; then
    nodeclaims=nodeclaims.karpenter.sh
    kubectl apply --server-side -f "$module/pkg/apis/crds" -f "$module/kwok/apis/crds" >/dev/null
    kubectl wait --for condition=Established --timeout 60s crd/nodepools.karpenter.sh crd/kwoknodeclasses.karpenter.kwok.sh >/dev/null
    perf_nodepool karpenter "$delay" "$spot" | kubectl apply -f - >/dev/null
    start karpenter env INSTANCE_TYPES_FILE_PATH="$results/instance-types.json" DISABLE_LEADER_ELECTION=true \
      REFUSED_SPOT_TYPES="$refusals" \
      METRICS_PORT=0 HEALTH_PROBE_PORT=0 LOG_LEVEL=info "$karpenter"
    pid=$(cat "$PIDS/karpenter.pid")
    wait_for "Karpenter's NodePool" 120 bash -c \
      "kubectl get nodepools.karpenter.sh perf -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
  else
    start_stoker "$delay"
    perf_nodepool stoker "$delay" "$spot" | kubectl apply -f - >/dev/null
    pid=$(cat "$PIDS/stoker.pid")
  fi
  sleep 5
  local expected_out expected_in scale_in
  "scenario_$scenario" >"$results/$scenario-deployments.yaml"
  expected_out=$(python3 -c 'import re, sys; print(sum(int(n) for n in re.findall(r"^  replicas: (\d+)", open(sys.argv[1]).read(), re.M)))' "$results/$scenario-deployments.yaml")
  if [[ $scenario == wide ]]; then scale_in=$(scale_in_wide); else scale_in=$scale_in_two_apps; fi
  expected_in=$(tr ' ' '\n' <<<"$scale_in" | awk -F= 'NF == 2 { sum += $2 } END { print sum }')

  log "$tool, $scenario: scale out to $expected_out pods"
  local ticks_before started scaled_out scaled_in last_change previous now deadline
  ticks_before=$(cpu_ticks "$pid")
  started=$(date +%s.%N)
  kubectl apply -f "$results/$scenario-deployments.yaml" >/dev/null
  deadline=$((SECONDS + 1200))
  until [[ $(running_pods) -ge $expected_out ]]; do
    ((SECONDS < deadline)) || { log "  not all pods Running after 20 minutes"; break; }
    sleep 2
  done
  scaled_out=$(date +%s.%N)
  local out
  out=$(figures "$tool" "after scale-out")

  log "$tool, $scenario: scale in to $expected_in pods"
  for change in $scale_in; do kubectl scale deployment "${change%=*}" --replicas "${change#*=}" >/dev/null; done
  scaled_in=$(date +%s.%N)
  last_change=$(date +%s.%N)
  previous=$(kubectl get "$nodeclaims" --no-headers 2>/dev/null | awk '{print $1}' | sort | tr '\n' ' ')
  deadline=$((SECONDS + 1800))
  local quiet_since=$SECONDS
  # $/h at each NodeClaim change, for when the final $/h was reached.
  : >"$results/cost-trace"
  while ((SECONDS - quiet_since < quiet)); do
    ((SECONDS < deadline)) || { log "  still consolidating after 30 minutes"; break; }
    sleep 5
    now=$(kubectl get "$nodeclaims" --no-headers 2>/dev/null | awk '{print $1}' | sort | tr '\n' ' ')
    if [[ "$now" != "$previous" || $(running_pods) -lt $expected_in ]]; then
      if [[ "$now" != "$previous" ]]; then
        last_change=$(date +%s.%N)
        echo "$last_change $(cost_now "$tool")" >>"$results/cost-trace"
      fi
      quiet_since=$SECONDS
    fi
    previous=$now
  done
  local in ticks_after rss_kib refused planned=null
  in=$(figures "$tool" "after consolidation")
  local left
  left=$(python3 -c 'import sys, time; print(max(0, int(float(sys.argv[1]) + float(sys.argv[2]) - time.time())))' "$started" "$window")
  ((left > 0)) && log "  the controller runs on for $left s, to the end of the ${window} s window"
  sleep "$left"
  if [[ $tool == stoker ]]; then
    planned=$(plan_from_scratch "$scenario" "$scale_in" "$spot")
    log "  stoker plan for the scaled-in pods from scratch: \$ $planned/h"
  fi
  # Launch attempts that met refused spot capacity: Karpenter's wrapper logs one line per
  # NodeClaim, the emulator one per CreateFleet call (each tool's own log: the directory outlives a run).
  local refusals_log="$LOGS/moto.log"
  [[ $tool == karpenter ]] && refusals_log="$LOGS/karpenter.log"
  refused=$(grep -c "refused spot capacity" "$refusals_log" || true)
  ticks_after=$(cpu_ticks "$pid")
  rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  python3 - "$tool" "$scenario" "$started" "$scaled_out" "$scaled_in" "$last_change" "$(date +%s.%N)" "$out" "$in" \
    "$((ticks_after - ticks_before))" "$(getconf CLK_TCK)" "$rss_kib" "$refused" "$planned" \
    "$results/cost-trace" >>"$results/results.jsonl" <<'PY'
import json, sys
tool, scenario = sys.argv[1:3]
started, scaled_out, scaled_in, last_change, finished = map(float, sys.argv[3:8])
out, after, ticks, hz, rss_kib = json.loads(sys.argv[8]), json.loads(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11]), int(sys.argv[12])
trace = [(float(at) - scaled_in, float(cost)) for at, cost in (line.split() for line in open(sys.argv[15]) if line.strip())]
print(json.dumps({"tool": tool, "scenario": scenario, "scale_out_seconds": scaled_out - started,
                  "out": out, "in": after, "last_disruption_seconds": max(0.0, last_change - scaled_in),
                  "cost_trace": trace,
                  "cpu_seconds": ticks / hz, "seconds": finished - started, "peak_rss_mib": rss_kib / 1024,
                  "refused_launches": int(sys.argv[13]), "plan_from_scratch": json.loads(sys.argv[14])}))
PY
  cp "$LOGS/$tool.log" "$results/$scenario-$tool.log"
  log "$tool, $scenario: $(tail -n 1 "$results/results.jsonl")"
}

for scenario in "${scenarios[@]}"; do
  for tool in "${tools[@]}"; do race "$tool" "$scenario"; done
done
python3 "$HACK_DIR/race_table.py" "$results/results.jsonl"
