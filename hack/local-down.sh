#!/usr/bin/env bash
# Stops every process hack/local-up.sh started, and nothing else.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -d $PIDS ]] || exit 0
# Reverse start order: the processes that talk to the apiserver go first.
for name in stoker karpenter node-simulator moto kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  file="$PIDS/$name.pid"
  [[ -f $file ]] || continue
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    # A wrapper's children first (STOKER_WRAPPER's profiler runs the controller as its child).
    pkill -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $name"
  fi
  rm -f "$file"
done
