#!/usr/bin/env bash
# Node agent benchmark, against the real server running its node's agent in a network namespace of its own (linked
# to an "upstream" namespace, as a node is to its network), with the busybox image already in the node's store:
#  - pod start latency: the create request of one pod to the pod seen Running on a watch, 50 pods one by one;
#  - a 100-replica Deployment from `kubectl apply` to 100 pods Ready;
#  - the server's RSS and CPU (agent included) with 0 and with 100 pods running.
#
#   sudo tests/bench/kubelet.sh        (BONSAI_BIN=path: measure that binary instead of building)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v kubectl >/dev/null || { echo "tests/bench/kubelet.sh: kubectl is needed on the PATH" >&2; exit 1; }
if [ -z "${BONSAI_BIN:-}" ]; then
  cargo build --release -q -p bonsai --bin bonsai
fi
bonsai=${BONSAI_BIN:-$PWD/target/release/bonsai}
ns=bkb$$
up=bku$$
dir=$(mktemp -d)
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  if [ -d "$dir/data/agent/containers" ]; then
    ids=$(ls "$dir/data/agent/containers")
    [ -n "$ids" ] && "$bonsai" containers -d "$dir/data" rm --force $ids >/dev/null 2>&1 || true
  fi
  for m in $(grep -o "$dir[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  ip netns del "$up" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # a signal exits, and so cleans up too
ip netns add "$ns"; ip netns add "$up"
ip -n "$ns" link set lo up
ip link add uplink netns "$ns" type veth peer name uplink netns "$up"
ip -n "$ns" addr add 192.168.209.1/24 dev uplink; ip -n "$ns" link set uplink up
ip -n "$up" addr add 192.168.209.2/24 dev uplink; ip -n "$up" link set uplink up
ip -n "$ns" route add default via 192.168.209.2
in_ns() { nsenter --net="/var/run/netns/$ns" -- "$@"; }
k() { in_ns kubectl --kubeconfig "$dir/kc.yaml" --cache-dir "$dir/kcache" "$@"; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }

# The image: busybox, built with umoci, imported into the node's store.
L=$dir/layout
umoci init --layout "$L"; umoci new --image "$L:base"
umoci unpack --image "$L:base" "$dir/b" >/dev/null
mkdir -p "$dir/b/rootfs/bin"; cp /bin/busybox "$dir/b/rootfs/bin/"; ln -s busybox "$dir/b/rootfs/bin/sleep"
umoci repack --image "$L:base" "$dir/b"
umoci config --image "$L:base" --tag v1 --config.cmd /bin/sleep --config.cmd 3600
skopeo copy -q "oci:$L:v1" "docker-archive:$dir/v1.tar:bench/busybox:v1"
"$bonsai" images -d "$dir/data" import "$dir/v1.tar" >/dev/null
image=docker.io/bench/busybox:v1

nsenter --net="/var/run/netns/$ns" -- "$bonsai" server -d "$dir/data" --write-kubeconfig "$dir/kc.yaml" --node-name n1 \
  --pod-logs-dir "$dir/logs" >"$dir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do [ -s "$dir/kc.yaml" ] && break; sleep 0.05; done
pod() { # name
  echo "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"$1\"}, \"spec\": {\"terminationGracePeriodSeconds\": 0, \"containers\": [{\"name\": \"c\", \"image\": \"$image\", \"imagePullPolicy\": \"Never\"}]}}"
}
# Warm up: the node registers, gets its subnet, and its network comes up.
pod warmup | k apply -f - >/dev/null
k wait --for=jsonpath='{.status.phase}'=Running pod/warmup --timeout=120s >/dev/null
k delete pod warmup --wait=true >/dev/null

rss() { awk '/^VmRSS/{print $2}' "/proc/$server_pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
hz=$(getconf CLK_TCK)
idle_cpu() { # percent of one core over 10 s
  local a b; a=$(cpu_ticks); sleep 10; b=$(cpu_ticks)
  awk -v a="$a" -v b="$b" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) * 100 / hz / 10 }'
}
rss0=$(rss); cpu0=$(idle_cpu)

# Each pod is created with one request (curl, the admin's certificate) and seen Running on a watch, so that
# neither kubectl's start-up nor polling is counted.
tls=$dir/data/server/tls
create() { # name
  pod "$1" | in_ns curl -s -o /dev/null --cacert "$tls/server-ca.crt" --cert "$tls/client-admin.crt" \
    --key "$tls/client-admin.key" -H 'Content-Type: application/json' --data-binary @- \
    https://127.0.0.1:6443/api/v1/namespaces/default/pods
}
k get pods --watch --output-watch-events -o jsonpath='{.object.metadata.name} {.object.status.phase}{"\n"}' |
  while read -r name phase; do echo "$(ms) $name $phase"; done >"$dir/watch.log" &
watch_pid=$!
sleep 1
lat=()
for i in $(seq 1 50); do
  start=$(ms)
  create "p$i"
  until grep -q " p$i Running" "$dir/watch.log"; do sleep 0.005; done
  seen=$(grep -m1 " p$i Running" "$dir/watch.log" | cut -d' ' -f1)
  lat+=($(( seen - start )))
done
kill "$watch_pid" 2>/dev/null || true
sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
p50=$(echo "$sorted" | sed -n 25p); p99=$(echo "$sorted" | sed -n 50p)
k delete pods --all --wait=true >/dev/null

start=$(ms)
cat <<JSON | k apply -f - >/dev/null
{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
 "spec": {"replicas": 100, "selector": {"matchLabels": {"app": "web"}},
  "template": {"metadata": {"labels": {"app": "web"}},
   "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "$image", "imagePullPolicy": "Never"}]}}}}
JSON
until [ "$(k get deployment web -o jsonpath='{.status.readyReplicas}')" = "100" ]; do sleep 0.2; done
ready100=$(( $(ms) - start ))
rss100=$(rss); cpu100=$(idle_cpu)
k delete deployment web >/dev/null
until [ -z "$(k get pods -o name)" ]; do sleep 0.5; done

echo "| measure | result |"
echo "|---|---:|"
echo "| pod start, create to Running on a watch (image present), p50 / p99 of 50 | $p50 / $p99 ms |"
echo "| 100-replica Deployment, kubectl apply to 100 Ready | $ready100 ms |"
echo "| server + agent RSS, 0 / 100 pods | $((rss0 / 1024)) / $((rss100 / 1024)) MB |"
echo "| server + agent CPU at rest, 0 / 100 pods | $cpu0 / $cpu100 % of a core |"
