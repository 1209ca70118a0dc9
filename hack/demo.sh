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
  crd/nodeclaims.stoker.dev crd/warmpools.stoker.dev >&2

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

log "starting the stoker controller (log: $LOGS/stoker.log)"
if running stoker; then kill "$(cat "$PIDS/stoker.pid")"; sleep 1; fi
start stoker "$stoker" controller --log-format text
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
log "what the example WarmPool will hold over the next two days (stoker warmpool preview):"
"$stoker" warmpool preview -f "$REPO_ROOT/examples/warmpool.yaml" --days 2 --svg "$STOKER_STATE/warmpool-preview.svg"
echo
log "the environment keeps running: 'source $STOKER_STATE/env' to use kubectl against it, hack/local-down.sh to stop it"
