#!/usr/bin/env bash
# Measures a burst on the local control plane: a Deployment of N pods (default 1,000, 100m each),
# or with `job` a Job of N parallel pods (each runs for 10 minutes, as kwok's pod-complete stage
# reads from its annotations), against the example NodePools, with `stoker controller` (optimized
# build) and the node simulator running. Prints, from the controller's JSON log: time from each
# batch close to its first CreateFleet call (p50/p99, and per batch its steps: snapshot,
# simulation, NodeClaim POST, watch delivery to the NodeClaim controller, its reconcile until
# CreateFleet), time from the workload's creation to the first NodeClaim, the number of
# CreateFleet calls and NodeClaims (with their price), the pods each batch planned, time until
# every pod runs, and the controller's peak RSS. Figures go in docs/performance.md.
# Usage: hack/bench-provisioning.sh [N] [deployment|job].
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pods="${1:-1000}"
kind="${2:-deployment}"
[[ $kind =~ ^(deployment|job)$ ]] || die "unknown kind $kind (deployment, job)"
bench_environment

"$stoker" crds | kubectl apply --server-side --field-manager stoker -f - >/dev/null
kubectl wait --for condition=Established --timeout 60s crd/nodeclaims.stoker.dev >/dev/null
kubectl apply -f "$REPO_ROOT/examples/ec2nodeclass.yaml" -f "$REPO_ROOT/examples/nodepool-spot.yaml" \
  -f "$REPO_ROOT/examples/nodepool-on-demand.yaml" >/dev/null
start stoker env LOG_FORMAT=json LEADER_ELECT=false METRICS_ADDRESS=127.0.0.1:0 HEALTH_ADDRESS=127.0.0.1:0 "$stoker" controller
start node-simulator "$stoker" node-simulator --delay 1s
wait_for "the EC2NodeClass" 120 bash -c "kubectl get ec2nodeclass default -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
sleep 5

# every_cpu_ticks: each local process's CPU time so far (user + system, in clock ticks), one per line.
every_cpu_ticks() {
  local pidfile ticks
  for pidfile in "$PIDS"/*.pid; do
    # A process that is gone has no line.
    ticks=$(cpu_ticks "$(cat "$pidfile")" 2>/dev/null) && echo "$(basename "$pidfile" .pid) $ticks"
  done
  return 0
}

log "creating a $kind of $pods pods"
every_cpu_ticks >"$LOGS/cpu-before.txt"
created=$(date +%s.%N)
if [[ $kind == job ]]; then
  kubectl apply -f - >/dev/null <<EOF2
apiVersion: batch/v1
kind: Job
metadata: {name: burst, namespace: default}
spec:
  parallelism: $pods
  completions: $pods
  template:
    metadata:
      labels: {app: burst}
      annotations: {pod-complete.stage.kwok.x-k8s.io/delay: 10m, pod-complete.stage.kwok.x-k8s.io/jitter-delay: 10m}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: registry.k8s.io/pause:3.10, resources: {requests: {cpu: 100m, memory: 128Mi}}}]
EOF2
else
  create_burst "$pods"
fi
wait_burst_running "$pods"
all_running=$(date +%s.%N)
every_cpu_ticks >"$LOGS/cpu-after.txt"
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$(cat "$PIDS/stoker.pid")/status")
# The apiserver's own latency histogram for the NodeClaim POSTs, to tell its time from the path to it.
kubectl get --raw /metrics | grep '^apiserver_request_duration_seconds_bucket{.*resource="nodeclaims".*verb="POST"' \
  >"$LOGS/nodeclaim-post-buckets.txt" || true

python3 - "$LOGS/stoker.log" "$created" "$all_running" "$rss_kib" "$pods" "$LOGS/nodeclaim-post-buckets.txt" \
  "$LOGS/cpu-before.txt" "$LOGS/cpu-after.txt" "$(getconf CLK_TCK)" "$kind" <<'PY'
import json, sys
from datetime import datetime
log, created, all_running, rss_kib, pods = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
post_buckets, cpu_before, cpu_after, ticks_per_second, kind = sys.argv[6], sys.argv[7], sys.argv[8], int(sys.argv[9]), sys.argv[10]
def at(line):
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
events = []
for raw in open(log):
    try:
        events.append(json.loads(raw))
    except ValueError:
        pass
closes = [at(e) for e in events if e.get("message") == "batch closed" and at(e) >= created]
fleet_calls = [e for e in events if e.get("message") == "calling CreateFleet" and at(e) >= created]
fleets = [at(e) for e in fleet_calls]
created_claims = [e for e in events if e.get("message") == "created NodeClaim" and at(e) >= created]
claims = [at(e) for e in created_claims]
# A batch that created NodeClaims: a "created NodeClaim" before the next batch closed.
bounds = closes[1:] + [float("inf")]
launching = [(c, nxt) for c, nxt in zip(closes, bounds) if any(c <= t < nxt for t in claims)]
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")
# Per launching batch: snapshot and simulation (from the batch's span), the NodeClaim POST (the
# rest until the first NodeClaim was created), and the NodeClaim controller until CreateFleet.
launches = [e for e in events if e.get("message") == "launching" and at(e) >= created]
steps = {"snapshot": [], "simulation": [], "NodeClaim POST": [], "watch -> reconcile": [],
         "reconcile -> CreateFleet": [], "total": []}
for close, nxt in launching:
    first = min((e for e in created_claims if close <= at(e) < nxt), key=at)
    name = first.get("nodeclaim")
    fleet = min((at(e) for e in events if e.get("message") == "calling CreateFleet" and name in e.get("nodeclaims", "").split()), default=None)
    launch = min((at(e) for e in launches if e.get("span", {}).get("nodeclaim") == name), default=None)
    if fleet is None or launch is None:
        continue
    span = first.get("span", {})
    snapshot, solve = float(span.get("snapshot_ms", "nan")), float(span.get("solve_ms", "nan"))
    to_claim = (at(first) - close) * 1000
    steps["snapshot"].append(snapshot)
    steps["simulation"].append(solve)
    steps["NodeClaim POST"].append(to_claim - snapshot - solve)
    steps["watch -> reconcile"].append((launch - at(first)) * 1000)
    steps["reconcile -> CreateFleet"].append((fleet - launch) * 1000)
    steps["total"].append((fleet - close) * 1000)
latencies = steps["total"]
print(f"pods                                   {pods}")
print(f"batches                                {len(closes)} ({len(launching)} created NodeClaims)")
print(f"batch close -> first CreateFleet, ms   p50 {pct(latencies, 50):.1f}  p99 {pct(latencies, 99):.1f}")
print("  per launching batch, ms: " + "; ".join(" ".join(f"{v:.1f}" for v in values) + f" ({name})" for name, values in steps.items()))
# stoker's own work on the path, without the apiserver's part (the POST and the watch delivery).
own = [s + m + r for s, m, r in zip(steps["snapshot"], steps["simulation"], steps["reconcile -> CreateFleet"])]
print(f"  stoker's own part, ms                p50 {pct(own, 50):.1f}  p99 {pct(own, 99):.1f}")
# Cumulative counts by upper bound, as the apiserver measured the POSTs (from the request's arrival).
buckets = {}
for raw in open(post_buckets):
    le = raw.split('le="', 1)[1].split('"', 1)[0]
    buckets[le] = buckets.get(le, 0) + float(raw.rsplit(" ", 1)[1])
shown = [le for le in ("0.005", "0.025", "0.05", "0.1", "+Inf") if le in buckets]
print("  NodeClaim POSTs as the apiserver timed them: " + ", ".join(f"{int(buckets[le])} within {le} s" for le in shown))
print(f"{kind} created -> first NodeClaim  {(min(claims) - created):.2f} s" if claims else "no NodeClaim created")
price = sum(float(e.get("price", 0)) for e in created_claims)
print(f"NodeClaims created                     {len(claims)}, ${price:.4f}/h at their cheapest offerings")
# The pods each launching batch planned (its NodeClaims' pods, expected ones included).
planned = [sum(int(e.get("pods", 0)) for e in created_claims if close <= at(e) < nxt) for close, nxt in launching]
print(f"pods planned per launching batch       {' '.join(map(str, planned))}")
print(f"CreateFleet calls                      {len(fleets)} for {sum(int(e.get('count', 1)) for e in fleet_calls)} instances")
print(f"{kind} created -> all pods Running {all_running - created:.1f} s")
# What each process of the local environment spent on the burst: on 2 cores it is what the
# apiserver's latency, and so the NodeClaim POST, depends on.
def ticks(path):
    return {name: int(value) for name, value in (line.split() for line in open(path))}
before = ticks(cpu_before)
spent = sorted(((value - before.get(name, 0)) / ticks_per_second, name) for name, value in ticks(cpu_after).items())
print("CPU seconds during the burst           " + ", ".join(f"{name} {seconds:.1f}" for seconds, name in reversed(spent)))
print(f"controller peak RSS                    {rss_kib / 1024:.0f} MiB")
PY
