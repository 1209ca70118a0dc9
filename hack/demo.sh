#!/usr/bin/env bash
# The main job on the local default: brings up the control plane and the EC2 emulator, installs
# stoker's CRDs, checks the examples offline with `stoker validate`, applies them to the real
# apiserver, shows what the cluster now holds, and previews the example WarmPool. Leaves the environment running; stop it with
# hack/local-down.sh.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require cargo "install Rust with rustup (https://rustup.rs), then run this again"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOKER_CACHE/target}"

"$HACK_DIR/local-up.sh"
# shellcheck disable=SC1091
source "$STOKER_STATE/env"
log "compiling stoker (cold: about 10 min on 2 cores; cached in $CARGO_TARGET_DIR)"
(cd "$REPO_ROOT" && cargo build --locked --bin stoker)
stoker="$CARGO_TARGET_DIR/debug/stoker"

log "installing the CRDs"
"$stoker" crds | kubectl apply --server-side --field-manager stoker -f - >&2
kubectl wait --for condition=Established --timeout 60s crd/nodepools.stoker.dev crd/ec2nodeclasses.stoker.dev \
  crd/nodeclaims.stoker.dev crd/nodeoverlays.stoker.dev crd/warmpools.stoker.dev >&2

log "checking the examples offline: stoker validate -f examples/"
"$stoker" validate $(printf -- '-f %s ' "$REPO_ROOT"/examples/*.yaml)
log "applying the examples to the apiserver"
kubectl apply --server-side --field-manager stoker-demo -f "$REPO_ROOT/examples/" >&2

log "a manifest with a mistake is refused by the apiserver, naming the field:"
kubectl apply --dry-run=server -f - <<'BAD' 2>&1 | sed 's/^/    /' || true
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: broken}
spec:
  weight: 500
  template:
    spec:
      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}
      requirements: [{key: karpenter.sh/capacity-type, operator: In}]
BAD

log "starting the stoker controller (log: $LOGS/stoker.log) and the node registration simulator (log: $LOGS/node-simulator.log)"
for name in stoker node-simulator; do
  if running "$name"; then kill "$(cat "$PIDS/$name.pid")"; sleep 1; fi
done
start stoker "$stoker" controller --log-format text
start node-simulator "$stoker" node-simulator
log "waiting for the EC2NodeClass to resolve its subnets, security groups and AMIs in the emulator"
kubectl wait --for condition=Ready --timeout 120s ec2nodeclass/default >&2 || {
  tail -n 20 "$LOGS/stoker.log" >&2
  die "the example EC2NodeClass did not become Ready"
}
echo
kubectl get nodepools,ec2nodeclasses -o wide
echo
kubectl get ec2nodeclass default -o jsonpath='{range .status.subnets[*]}    subnet {.id} {.zone}{"\n"}{end}{range .status.amis[*]}    ami {.id} {.name}{"\n"}{end}    instance profile {.status.instanceProfile}{"\n"}'
echo
kubectl get warmpools -A
echo

# pods_running: how many inflate pods are Running.
pods_running() { kubectl get pods -l app=inflate --field-selector status.phase=Running --no-headers 2>/dev/null | wc -l; }
log "the inflate Deployment (examples/inflate.yaml, 20 pods of 1 CPU) is pending: stoker batches its pods,"
log "creates NodeClaims, launches them with CreateFleet in the emulator; the simulator registers the nodes"
deadline=$((SECONDS + 240))
while (($(pods_running) < 20)); do
  ((SECONDS < deadline)) || { tail -n 30 "$LOGS/stoker.log" >&2; die "inflate's pods did not all run within 240s"; }
  printf '    %3ss  nodeclaims: %s  nodes: %s  inflate pods running: %s/20\n' "$SECONDS" \
    "$(kubectl get nodeclaims --no-headers 2>/dev/null | wc -l)" "$(kubectl get nodes --no-headers 2>/dev/null | wc -l)" "$(pods_running)"
  sleep 3
done
echo
kubectl get nodeclaims -o wide
echo
kubectl get nodes -L stoker.dev/nodepool -L node.kubernetes.io/instance-type -L karpenter.sh/capacity-type -L topology.kubernetes.io/zone
echo
log "instances in the emulator:"
"$MOTO_VENV/bin/python" - <<'PY'
import boto3, os
ec2 = boto3.client("ec2", endpoint_url=os.environ["AWS_ENDPOINT_URL_EC2"], region_name=os.environ["AWS_REGION"])
filters = [{"Name": "tag:stoker.dev/cluster", "Values": [os.environ["CLUSTER_NAME"]]},
           {"Name": "instance-state-name", "Values": ["pending", "running"]}]
for reservation in ec2.describe_instances(Filters=filters)["Reservations"]:
    for i in reservation["Instances"]:
        tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
        print(f"    {i['InstanceId']}  {i['InstanceType']:<14} {i['Placement']['AvailabilityZone']}  "
              f"{i.get('InstanceLifecycle', 'on-demand'):<9} nodeclaim={tags.get('stoker.dev/nodeclaim')}")
PY
echo
log "deleting the Deployment: nodes left empty go after their NodePool's consolidateAfter (1m for spot)"
kubectl delete deployment inflate --wait=true >&2
kubectl wait --for=delete pod -l app=inflate --timeout 60s >&2 || true
# empty_nodes: stoker's nodes on which no pod runs.
empty_nodes() {
  comm -23 <(kubectl get nodes -l stoker.dev/nodepool -o name | sed 's|^node/||' | sort) \
    <(kubectl get pods -A -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u) | wc -l
}
deadline=$((SECONDS + 300))
while (($(empty_nodes) > 0)); do
  ((SECONDS < deadline)) || die "empty nodes were not removed within 300s"
  printf '    %3ss  empty nodes: %s  nodes: %s\n' "$SECONDS" "$(empty_nodes)" "$(kubectl get nodes --no-headers 2>/dev/null | wc -l)"
  sleep 5
done
log "empty nodes drained, their instances terminated in the emulator, and removed (nodes holding warm-pool pause pods stay)"
kubectl get nodes
echo
log "what the example WarmPool will hold over the next two days (stoker warmpool preview):"
"$stoker" warmpool preview -f "$REPO_ROOT/examples/warmpool.yaml" --days 2 --svg "$STOKER_STATE/warmpool-preview.svg"
echo
log "the environment keeps running: 'source $STOKER_STATE/env' to use kubectl against it, hack/local-down.sh to stop it"
