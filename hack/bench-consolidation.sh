#!/usr/bin/env bash
# Karpenter's "basic" performance scenario (test/suites/performance in kubernetes-sigs/karpenter)
# on the local control plane: two Deployments of 500 pods (900m / 3100Mi and 3500m / 28Gi), a
# NodePool with WhenEmptyOrUnderutilized, consolidateAfter 30s and a 100% budget (on-demand, so
# consolidation may replace as well as delete); scale out, then scale both to 350. Prints the
# scale-out time; reserved CPU and memory utilization after scale-out and after consolidation;
# nodes and $/h before and after (on-demand list prices); the time from the scale-in to the last
# consolidation action; what `stoker plan` gives for the 700 pods from scratch; the controller's
# peak RSS and average CPU. Figures go in docs/performance.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_environment
start_stoker
pool="$LOGS/perf-nodepool.yaml"
perf_nodepool stoker >"$pool"
kubectl apply -f "$pool" >/dev/null
deployments="$LOGS/perf-deployments.yaml"
{ perf_deployment small 500 900m 3100Mi; perf_deployment large 500 3500m 28Gi; } >"$deployments"

sleep 5

prices="$REPO_ROOT/src/cloudprovider/aws/data/on-demand-prices.csv"
# report LABEL: nodes, $/h and reserved utilization of the pool's nodes right now.
report() { python3 "$HACK_DIR/cluster_figures.py" stoker.dev/nodepool=perf "$prices" "$1" | sed -n 1p; }
running() { kubectl get pods -l "app in (small,large)" --field-selector status.phase=Running --no-headers 2>/dev/null | wc -l; }

log "scale out: 2 x 500 pods"
ticks_before=$(cpu_ticks "$(cat "$PIDS/stoker.pid")")
started=$(date +%s.%N)
kubectl apply -f "$deployments" >/dev/null
deadline=$((SECONDS + 900))
until [[ $(running) -ge 1000 ]]; do
  ((SECONDS < deadline)) || die "the scale-out did not finish within 900s (log: $LOGS/stoker.log)"
  sleep 2
done
scaled_out=$(date +%s.%N)
report "after scale-out"

log "scale in: both to 350"
kubectl scale deployment small large --replicas 350 >/dev/null
scaled_in=$(date +%s.%N)
# Consolidation is over when no NodeClaim changed for two minutes (consolidateAfter 30 s, the
# 15 s re-check, a replacement's launch) and every pod runs.
last_change=$SECONDS
previous=""
deadline=$((SECONDS + 1500))
while ((SECONDS - last_change < 120)); do
  ((SECONDS < deadline)) || { log "still consolidating after 25 minutes"; break; }
  now=$(kubectl get nodeclaims -l stoker.dev/nodepool=perf --no-headers 2>/dev/null | awk '{print $1}' | sort | tr '\n' ' ')
  [[ "$now" != "$previous" || $(running) -lt 700 ]] && last_change=$SECONDS
  previous=$now
  sleep 5
done
report "after consolidation"
ticks_after=$(cpu_ticks "$(cat "$PIDS/stoker.pid")")
finished=$(date +%s.%N)
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$(cat "$PIDS/stoker.pid")/status")

# What stoker plan gives for the 700 pods from scratch.
{ cat "$pool"; perf_deployment small 350 900m 3100Mi; perf_deployment large 350 3500m 28Gi; } >"$LOGS/perf-plan.yaml"
planned=$("$stoker" plan -f "$LOGS/perf-plan.yaml" -f "$REPO_ROOT/examples/ec2nodeclass.yaml" -o json |
  python3 -c 'import json, sys; print("%.3f" % json.load(sys.stdin)["totals"]["pricePerHour"])')

python3 - "$LOGS/stoker.log" "$started" "$scaled_out" "$scaled_in" "$finished" "$rss_kib" \
  "$ticks_before" "$ticks_after" "$(getconf CLK_TCK)" "$planned" <<'PY'
import json, sys
from datetime import datetime
log = sys.argv[1]
started, scaled_out, scaled_in, finished = map(float, sys.argv[2:6])
rss_kib, before, after, hz, planned = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9]), sys.argv[10]
actions = []
for raw in open(log):
    try:
        event = json.loads(raw)
    except ValueError:
        continue
    if event.get("message") in ("disrupting", "disrupting empty node"):
        actions.append(datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp())
after_scale_in = [t for t in actions if t >= scaled_in]
print(f"scale-out: 1,000 pods Running after  {scaled_out - started:.1f} s")
print(f"scale-in -> last consolidation action {max(after_scale_in) - scaled_in:.1f} s ({len(after_scale_in)} nodes disrupted)"
      if after_scale_in else "no consolidation action after the scale-in")
print(f"stoker plan for the 700 pods         ${planned}/h")
print(f"controller peak RSS                  {rss_kib / 1024:.0f} MiB")
print(f"controller average CPU               {(after - before) / hz / (finished - started):.3f} cores over {finished - started:.0f} s")
PY
