#!/usr/bin/env bash
# Starts the local environment on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok (the kubelet stand-in) and the EC2 emulator, seeded like a small EKS VPC.
# Builds what is missing first (cached). Running it again while everything runs does nothing;
# after a crash it cleans up what is left and starts fresh.
#
# Writes $STOKER_STATE/env (source it: KUBECONFIG, AWS_* for the emulator, CLUSTER_NAME) and
# $STOKER_STATE/kubeconfig.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require openssl "install openssl (Debian: apt-get install openssl), then run this again"
"$HACK_DIR/build-control-plane.sh"
"$HACK_DIR/install-emulator.sh"

PKI="$STOKER_STATE/pki"
mkdir -p "$PIDS" "$LOGS"

all=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok moto)
alive=0
for name in "${all[@]}"; do running "$name" && alive=$((alive + 1)); done
if ((alive == ${#all[@]})); then
  log "local environment already running (hack/local-down.sh stops it)"
  exit 0
fi
if ((alive > 0)); then
  log "a previous environment is partly running: stopping it first"
  "$HACK_DIR/local-down.sh"
fi

port_free "$ETCD_PORT" etcd
port_free "$ETCD_PEER_PORT" "etcd peers"
port_free "$APISERVER_PORT" kube-apiserver
port_free "$MOTO_PORT" "EC2 emulator"
port_free "$KWOK_PORT" kwok

# start NAME COMMAND...: run in the background, remembering the pid and logging to a file.
make_pki() {
  [[ -f $PKI/admin.token ]] && return 0
  mkdir -p "$PKI.tmp" && cd "$PKI.tmp"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=stoker-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  openssl rand -hex 24 >admin.token
  printf '%s,admin,admin,"system:masters"\n' "$(cat admin.token)" >tokens.csv
  cd - >/dev/null
  rm -rf "$PKI" && mv "$PKI.tmp" "$PKI"
}
make_pki

cat >"$KUBECONFIG_LOCAL" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: stoker-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: admin
  user:
    token: $(cat "$PKI/admin.token")
contexts:
- name: stoker-local
  context: {cluster: stoker-local, user: admin}
current-context: stoker-local
KUBECONFIG

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_LOCAL" "$@"; }

log "starting etcd $ETCD_VERSION on 127.0.0.1:$ETCD_PORT (fresh data)"
rm -rf "$STOKER_STATE/etcd"
start etcd "$ETCD_BIN/etcd" --name local --data-dir "$STOKER_STATE/etcd" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
wait_for etcd 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ETCD_PORT"

log "starting kube-apiserver $KUBERNETES_VERSION on https://127.0.0.1:$APISERVER_PORT"
start_apiserver

log "starting kube-controller-manager and kube-scheduler"
start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_LOCAL" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt"
start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_LOCAL" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port 0

log "starting kwok $KWOK_VERSION (keeps stoker's simulated nodes Ready and runs their pods)"
stage_args=()
for stage in "$KWOK_BIN"/stages/*.yaml; do stage_args+=(--config "$stage"); done
start kwok "$KWOK_BIN/kwok" --kubeconfig "$KUBECONFIG_LOCAL" "${stage_args[@]}" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --server-address "127.0.0.1:$KWOK_PORT"

log "starting the AWS emulator (moto $MOTO_VERSION: EC2, SSM, IAM, SQS; recorded Price List replies) on http://127.0.0.1:$MOTO_PORT"
kubernetes_minor="$(echo "$KUBERNETES_VERSION" | sed -E 's/^v([0-9]+\.[0-9]+)\..*/\1/')"
# Every call stoker's own clients make is recorded for the IAM policy test.
aws_call_log="$STOKER_STATE/aws-calls.jsonl"
: >"$aws_call_log"
STOKER_AWS_CALL_LOG="$aws_call_log" STOKER_PRICE_LIST_RECORDINGS="$PRICE_LIST_RECORDINGS" start moto "$MOTO_VENV/bin/python" "$HACK_DIR/emulator.py" "$STOKER_STATE" "$kubernetes_minor" -H 127.0.0.1 -p "$MOTO_PORT"
wait_for "EC2 emulator" 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/$MOTO_PORT"

cat >"$STOKER_STATE/env" <<ENV
export KUBECONFIG="$KUBECONFIG_LOCAL"
export AWS_ENDPOINT_URL_EC2="http://127.0.0.1:$MOTO_PORT"
export AWS_ENDPOINT_URL_SSM="http://127.0.0.1:$MOTO_PORT"
export AWS_ENDPOINT_URL_IAM="http://127.0.0.1:$MOTO_PORT"
export AWS_ENDPOINT_URL_SQS="http://127.0.0.1:$MOTO_PORT"
export AWS_ENDPOINT_URL_PRICING="http://127.0.0.1:$MOTO_PORT"
export STOKER_AWS_CALL_LOG="$aws_call_log"
export STOKER_IAM_SIMULATOR="$IAM_SIMULATOR"
export STOKER_CFN_LINT="$CFN_LINT_VENV/bin/cfn-lint"
export AWS_REGION="$AWS_REGION_LOCAL"
export STOKER_OTHER_REGION="$AWS_REGION_OTHER"
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_EC2_METADATA_DISABLED=true
export CLUSTER_NAME="$CLUSTER_NAME"
export CLUSTER_ENDPOINT="https://127.0.0.1:$APISERVER_PORT"
export CLUSTER_CA_BUNDLE="$(base64 -w0 "$PKI/ca.crt")"
export CLUSTER_SERVICE_CIDR=10.96.0.0/16
export PATH="$K8S_BIN:$HELM_BIN:\$PATH"
export HELM="$HELM_BIN/helm"
ENV
# shellcheck disable=SC1091
source "$STOKER_STATE/env"
log "seeding the emulator like an EKS VPC tagged karpenter.sh/discovery=$CLUSTER_NAME"
"$MOTO_VENV/bin/python" "$HACK_DIR/seed-emulator.py" "$CLUSTER_NAME" "$AWS_ENDPOINT_URL_EC2" | sed 's/^/    /' >&2
log "seeding $AWS_REGION_OTHER alike, for tests of regional prices"
AWS_REGION="$AWS_REGION_OTHER" "$MOTO_VENV/bin/python" "$HACK_DIR/seed-emulator.py" "$CLUSTER_NAME" "$AWS_ENDPOINT_URL_EC2" | sed 's/^/    /' >&2

sleep 1
for name in kube-controller-manager kube-scheduler kwok moto; do
  if ! running "$name"; then
    tail -n 5 "$LOGS/$name.log" >&2
    die "$name exited at start; see $LOGS/$name.log"
  fi
done
wait_for "the default service account" 60 kubectl get serviceaccount default -n default
log "local environment up in ${SECONDS}s: source $STOKER_STATE/env to use it"
