#!/usr/bin/env bash
# Scheduler and controller benchmark, against the real server in a network namespace of its own:
#  - scheduling throughput: 1,000 pods made while the scheduler is off (--disable-scheduler), then the server
#    restarted with it on; the time from "ready" to the last binding, over 5 nodes (the test plays their kubelets'
#    registration);
#  - the time from `kubectl scale deployment --replicas=100` to 100 pods bound (ReplicaSet controller + scheduler).
#
#   sudo tests/bench/scheduler.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v kubectl >/dev/null || { echo "tests/bench/scheduler.sh: kubectl is needed on the PATH" >&2; exit 1; }
if [ -z "${BONSAI_BIN:-}" ]; then
  cargo build --release -q -p bonsai --bin bonsai
fi
bonsai=${BONSAI_BIN:-$PWD/target/release/bonsai}
ns=bsb$$
dir=$(mktemp -d)
cleanup() {
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  sleep 0.5
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # a signal exits, and so cleans up too
ip netns add "$ns"; ip -n "$ns" link set lo up
in_ns() { nsenter --net="/var/run/netns/$ns" -- "$@"; }
k() { in_ns kubectl --kubeconfig "$dir/kc.yaml" "$@"; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
server() { # extra flags; waits until ready
  rm -f "$dir/kc.yaml"
  nsenter --net="/var/run/netns/$ns" -- "$bonsai" server --disable-agent -d "$dir/data" --write-kubeconfig "$dir/kc.yaml" "$@" >>"$dir/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 300); do [ -s "$dir/kc.yaml" ] && return; sleep 0.05; done
  echo "the server did not start" >&2; exit 1
}
bound() { k get pods -A -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -c . || true; }

server --disable-scheduler
for i in 1 2 3 4 5; do
  echo "{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n$i\", \"labels\": {\"kubernetes.io/hostname\": \"n$i\"}}}" | k create -f - >/dev/null
  k patch node "n$i" --subresource=status --type=merge -p '{"status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"}, "conditions": [{"type": "Ready", "status": "True"}]}}' >/dev/null
done
python3 - "$dir/pods.json" <<'PY'
import json, sys
items = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i:04}", "namespace": "default", "labels": {"app": "bench"}},
          "spec": {"containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}
         for i in range(1000)]
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(sys.argv[1], "w"))
PY
k create -f "$dir/pods.json" >/dev/null
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
start=$(ms); server; ready=$(ms)
until [ "$(bound)" -ge 1000 ]; do sleep 0.1; done
end=$(ms)
per_node=$(k get pods -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
echo "scheduling: 1,000 pending pods bound in $((end - ready)) ms after the server was ready ($((1000 * 1000 / (end - ready + 1))) pods/s); spread: $per_node"

k delete pods --all --grace-period=0 --force >/dev/null 2>&1 || true
k create deployment web --image=busybox:1 --replicas=0 >/dev/null
start=$(ms); k scale deployment web --replicas=100 >/dev/null
until [ "$(bound)" -ge 100 ]; do sleep 0.05; done
end=$(ms)
echo "scale: kubectl scale deployment --replicas=100 to 100 pods bound in $((end - start)) ms"
