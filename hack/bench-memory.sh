#!/usr/bin/env bash
# Measures the controller's memory at scale on the local control plane: N nodes (default 1,000,
# kwok-managed, 16 CPU / 64 GiB / 110 pods each) running P bound pods (default 10,000), then
# `stoker controller` (optimized build) starts, lists all of it into its caches, and provisions a
# burst of B pending pods (default 500) for the example NodePools. Prints the RSS after the
# caches synced, after the burst, and the peak (VmHWM). Figures go in docs/performance.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

nodes="${1:-1000}" pods="${2:-10000}" burst="${3:-500}"
bench_environment

# Objects go in as Lists of 500, so the apiserver, not kubectl start-ups, sets the pace.
generate() {
  python3 - "$@" <<'PY'
import json, sys
kind, count, per_node = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def node(i):
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"scale-{i:04d}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/hostname": f"scale-{i:04d}", "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": f"us-east-1{'abc'[i % 3]}",
                                    "node.kubernetes.io/instance-type": "m5.4xlarge", "type": "kwok"}},
            "spec": {"taints": [{"key": "scale", "value": "only", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                       "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}}}
def pod(i):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"scale-{i:05d}", "namespace": "default",
                         "labels": {"app": f"scale-{i % 50}", "tier": "bench"}},
            "spec": {"nodeName": f"scale-{i // per_node:04d}",
                     "tolerations": [{"key": "scale", "operator": "Exists"}],
                     "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}
make = node if kind == "node" else pod
for start in range(0, count, 500):
    items = [make(i) for i in range(start, min(count, start + 500))]
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
}
log "creating $nodes nodes"
generate node "$nodes" 1 | while read -r list; do kubectl create -f - <<<"$list" >/dev/null; done
log "creating $pods pods bound to them"
per_node=$(((pods + nodes - 1) / nodes))
generate pod "$pods" "$per_node" | while read -r list; do kubectl create -f - <<<"$list" >/dev/null; done

# The controller (STOKER_WRAPPER runs it under a profiler: see start_stoker) and its NodePools.
start_stoker
kubectl apply -f "$REPO_ROOT/examples/nodepool-spot.yaml" -f "$REPO_ROOT/examples/nodepool-on-demand.yaml" >/dev/null
wait_for "stoker's caches" 300 grep -q '"caches synced"' "$LOGS/stoker.log"
rss() { awk "/$1/ {print int(\$2 / 1024)}" "/proc/$(cat "$PIDS/stoker.pid")/status"; }
synced_rss=$(rss VmRSS)

log "creating a Deployment of $burst pending pods for the spot NodePool"
create_burst "$burst" "{stoker.dev/nodepool: spot}"
wait_burst_running "$burst"
printf 'nodes %s, bound pods %s, burst %s\n' "$nodes" "$pods" "$burst"
printf 'RSS after the caches synced   %s MiB\n' "$synced_rss"
printf 'RSS after the burst ran       %s MiB\n' "$(rss VmRSS)"
printf 'peak RSS (VmHWM)              %s MiB\n' "$(rss VmHWM)"
printf 'NodeClaims                    %s\n' "$(kubectl get nodeclaims --no-headers | wc -l)"
