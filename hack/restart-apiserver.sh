#!/usr/bin/env bash
# Restarts the local environment's kube-apiserver (same etcd, same PKI), as an upgrade or a crash
# would: every client's connections break, every watch must be re-established. The chaos soak
# uses it; it honours the same STOKER_STATE and port variables as local-up.sh.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

running kube-apiserver || die "no kube-apiserver of $STOKER_STATE is running (hack/local-up.sh starts one)"
pid="$(cat "$PIDS/kube-apiserver.pid")"
kill "$pid"
for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
wait_for "the old kube-apiserver's port to close" 30 bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$APISERVER_PORT)"
log "restarting kube-apiserver on https://127.0.0.1:$APISERVER_PORT"
start_apiserver
log "kube-apiserver restarted"
