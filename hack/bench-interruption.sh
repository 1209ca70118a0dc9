#!/usr/bin/env bash
# Measures how fast stoker reacts to spot interruption warnings on the local control plane, with
# the emulator serving SQS: N warnings (default 20), one at a time, each for the node of a pod of
# a two-replica Deployment spread over two spot nodes. Per warning, from the controller's receipt
# of the message (its JSON log): replacement NodeClaim created, drain started (the node tainted),
# and, polled by this script every ~0.1 s, both pods Running again on other nodes; p50 and p95.
# Also the queue's delivery (sent → received). Nodes turn Ready 1 s after they register (the
# node simulator), as in the other benchmarks. Figures go in docs/performance.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

count="${1:-20}"
queue=bench-interruptions
bench_environment
"$stoker" crds | kubectl apply --server-side --field-manager stoker -f - >/dev/null
kubectl wait --for condition=Established --timeout 60s crd/nodeclaims.stoker.dev >/dev/null
kubectl apply -f "$REPO_ROOT/examples/ec2nodeclass.yaml" >/dev/null
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: spot}
spec:
  template:
    spec:
      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot]}
        - {key: kubernetes.io/arch, operator: In, values: [amd64]}
  disruption: {consolidateAfter: Never}
EOF
# botocore reads the region from AWS_DEFAULT_REGION; the endpoint from AWS_ENDPOINT_URL_SQS.
export AWS_DEFAULT_REGION="$AWS_REGION"
"$MOTO_VENV/bin/python" -c "import boto3; boto3.client('sqs').create_queue(QueueName='$queue')"

start stoker env LOG_FORMAT=json LEADER_ELECT=false METRICS_ADDRESS=127.0.0.1:0 HEALTH_ADDRESS=127.0.0.1:0 \
  INTERRUPTION_QUEUE="$queue" "$stoker" controller
start node-simulator "$stoker" node-simulator --delay 1s
wait_for "the EC2NodeClass" 120 bash -c "kubectl get ec2nodeclass default -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: victim, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: victim}}
  template:
    metadata: {labels: {app: victim}}
    spec:
      terminationGracePeriodSeconds: 0
      nodeSelector: {stoker.dev/nodepool: spot}
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: victim}}}
      containers:
        - name: c
          image: registry.k8s.io/pause:3.10
          resources: {requests: {cpu: "1", memory: 1Gi}}
EOF

log "interrupting $count nodes, one at a time"
"$MOTO_VENV/bin/python" - "$count" "$queue" "$LOGS/stoker.log" <<'PY'
import json, statistics, subprocess, sys, time
from datetime import datetime, timezone
import boto3

count, queue, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sqs = boto3.client("sqs")
url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]

def kubectl_json(*args):
    return json.loads(subprocess.run(["kubectl", *args, "-o", "json"], check=True, capture_output=True).stdout)

def settled(avoid):
    """Both pods Running, ready, on nodes other than `avoid`, none terminating."""
    pods = kubectl_json("get", "pods", "-l", "app=victim")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    running = [p for p in live if p["status"].get("phase") == "Running" and p["spec"].get("nodeName") != avoid]
    return len(live) == 2 and len(running) == 2, running

def wait(avoid, limit=300):
    deadline = time.time() + limit
    while time.time() < deadline:
        done, running = settled(avoid)
        if done:
            return time.time(), running
        time.sleep(0.1)
    sys.exit(f"the pods did not run again within {limit}s (log: {log})")

_, running = wait(None)
samples = []
for i in range(count):
    victim = running[0]["spec"]["nodeName"]
    claims = kubectl_json("get", "nodeclaims")["items"]
    claim = next(c for c in claims if c.get("status", {}).get("nodeName") == victim)
    instance = claim["status"]["providerID"].rsplit("/", 1)[-1]
    event = {"version": "0", "id": f"bench-{i}", "detail-type": "EC2 Spot Instance Interruption Warning",
             "source": "aws.ec2", "account": "123456789012", "time": datetime.now(timezone.utc).isoformat(),
             "region": "us-east-1", "resources": [], "detail": {"instance-id": instance, "instance-action": "terminate"}}
    sent = time.time()
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
    ran, running = wait(victim)
    samples.append((victim, sent, ran))
    print(f"  {i + 1:>2}/{count}: {victim} interrupted, pods Running elsewhere {ran - sent:.2f} s after sending", flush=True)
    time.sleep(1)

events = []
for raw in open(log):
    try:
        entry = json.loads(raw)
    except ValueError:
        continue
    at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
    events.append((at, entry.get("message"), entry.get("node")))

delivery, replaced, drained, moved = [], [], [], []
for victim, sent, ran in samples:
    received = next(at for at, message, _ in events if at >= sent - 0.01 and message == "received from the interruption queue")
    # Until the drain: a replacement comes first, unless the pods fit on other nodes.
    draining = next(at for at, message, node in events if at >= received and message == "draining" and node == victim)
    created = [at for at, message, _ in events if received <= at <= draining and message == "created replacements for interrupted nodes"]
    delivery.append(received - sent)
    replaced.extend(at - received for at in created[:1])
    drained.append(draining - received)
    moved.append(ran - received)

def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

print(f"\n{'over ' + str(count) + ' interruptions':<44} {'p50':>8} {'p95':>8}")
print(f"(a replacement was created for {len(replaced)}; the others' pods fitted on other nodes)")
for label, values in [("queue delivery (sent -> received)", delivery),
                      ("received -> replacement NodeClaim created", replaced),
                      ("received -> drain started (node tainted)", drained),
                      ("received -> pods Running elsewhere", moved)]:
    print(f"{label:<44} {percentile(values, 0.5):>7.3f}s {percentile(values, 0.95):>7.3f}s")
PY
