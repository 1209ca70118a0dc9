#!/usr/bin/env bash
# Measures what warm capacity buys on the local control plane: the time from a real pod's
# creation to Running with a WarmPool of N pause pods (default 20, one per real pod: each real pod
# preempts one), with a CapacityBuffer of N chunks (virtual pods: each real pod takes a chunk's
# empty room, no preemption), and without either (a new node per pod), p50 and p95 over N pods
# each, same environment, same pod size.
# Each sample is `kubectl create` then `kubectl wait` (a watch), so it includes two kubectl
# start-ups (~0.1 s). Figures go in docs/performance.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

count="${1:-20}"
bench_environment

"$stoker" crds | kubectl apply --server-side --field-manager stoker -f - >/dev/null
kubectl wait --for condition=Established --timeout 60s crd/warmpools.stoker.dev \
  crd/capacitybuffers.autoscaling.x-k8s.io >/dev/null
kubectl apply -f "$REPO_ROOT/examples/ec2nodeclass.yaml" >/dev/null
for pool in warm buffered cold; do
  kubectl apply -f - >/dev/null <<EOF
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: $pool}
spec:
  template:
    spec:
      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}
      requirements:
        - {key: node.kubernetes.io/instance-type, operator: In, values: [c6a.large]}
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
  disruption: {consolidateAfter: Never}
EOF
done
start stoker env LOG_FORMAT=json LEADER_ELECT=false METRICS_ADDRESS=127.0.0.1:0 HEALTH_ADDRESS=127.0.0.1:0 "$stoker" controller
start node-simulator "$stoker" node-simulator --delay 2s
wait_for "the EC2NodeClass" 120 bash -c "kubectl get ec2nodeclass default -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"

# One 1,500m pause pod fills a c6a.large (1,930m allocatable): each real pod needs one node.
log "warming $count pause pods"
kubectl apply -f - >/dev/null <<EOF
apiVersion: stoker.dev/v1alpha1
kind: WarmPool
metadata: {name: bench, namespace: default}
spec:
  baseline: $count
  resources: {requests: {cpu: 1500m, memory: 256Mi}}
  nodeSelector: {stoker.dev/nodepool: warm}
EOF
deadline=$((SECONDS + 600))
until [[ $(kubectl get warmpool bench -o jsonpath='{.status.readyReplicas}' 2>/dev/null) == "$count" ]]; do
  ((SECONDS < deadline)) || die "the warm pool did not fill within 600s"
  sleep 2
done
log "keeping $count CapacityBuffer chunks of the same size"
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PodTemplate
metadata: {name: bench-chunk, namespace: default}
template:
  spec:
    nodeSelector: {stoker.dev/nodepool: buffered}
    containers: [{name: c, image: registry.k8s.io/pause:3.10, resources: {requests: {cpu: 1500m, memory: 256Mi}}}]
---
apiVersion: autoscaling.x-k8s.io/v1beta1
kind: CapacityBuffer
metadata: {name: bench, namespace: default}
spec:
  podTemplateRef: {name: bench-chunk}
  replicas: $count
EOF
kubectl wait --for condition=Ready --timeout 600s capacitybuffer/bench >/dev/null ||
  die "the CapacityBuffer's room did not come up within 600s"

# sample POOL INDEX: seconds from creating a 1,500m pod on POOL to Running.
sample() {
  local start end
  start=$(date +%s.%N)
  kubectl run "real-$1-$2" --image registry.k8s.io/pause:3.10 --restart Never \
    --overrides "{\"spec\":{\"nodeSelector\":{\"stoker.dev/nodepool\":\"$1\"},\"terminationGracePeriodSeconds\":0,\"containers\":[{\"name\":\"real-$1-$2\",\"image\":\"registry.k8s.io/pause:3.10\",\"resources\":{\"requests\":{\"cpu\":\"1500m\",\"memory\":\"256Mi\"}}}]}}" >/dev/null
  kubectl wait --for jsonpath='{.status.phase}'=Running --timeout 300s "pod/real-$1-$2" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 3))"
}

for pool in warm buffered cold; do
  log "measuring $count pods on the $pool pool"
  : >"$STOKER_STATE/$pool.samples"
  for i in $(seq "$count"); do
    sample "$pool" "$i" >>"$STOKER_STATE/$pool.samples"
  done
done
python3 - "$STOKER_STATE/warm.samples" "$STOKER_STATE/buffered.samples" "$STOKER_STATE/cold.samples" <<'PY'
import sys
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]
for path in sys.argv[1:]:
    values = [float(v) for v in open(path) if v.strip()]
    name = path.rsplit("/", 1)[1].split(".")[0]
    print(f"{name:<8} n={len(values)}  p50 {pct(values, 50):.2f} s  p95 {pct(values, 95):.2f} s  max {max(values):.2f} s")
PY
kubectl get warmpool bench -o jsonpath='{"preemptions counted: "}{.status.preemptions}{"\n"}'
