#!/usr/bin/env bash
# Join benchmark: how long `bonsai agent` takes from its start to its Node being Ready (the CA fetched and checked,
# the client CSR approved and issued, the node registered, the serving CSR issued, the first Ready heartbeat),
# against the real server, each node a network namespace of its own linked through a bridge (as the e2e tests
# run them). RUNS joins (default 5), each with a fresh agent data directory; prints each and the median.
#
#   sudo tests/bench/join.sh        (BONSAI_BIN=path: measure that binary instead of building; RUNS=n)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v kubectl >/dev/null || { echo "tests/bench/join.sh: kubectl is needed" >&2; exit 1; }
if [ -z "${BONSAI_BIN:-}" ]; then
  cargo build --release -q -p bonsai --bin bonsai
fi
bonsai=${BONSAI_BIN:-$PWD/target/release/bonsai}
runs=${RUNS:-5}
hub=bjh$$
srv=bjs$$
agt=bja$$
dir=$(mktemp -d)
cleanup() {
  [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  for m in $(grep -o "$dir[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  for ns in "$agt" "$srv" "$hub"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # a signal exits, and so cleans up too
ip netns add "$hub"; ip -n "$hub" link set lo up
ip -n "$hub" link add br0 type bridge; ip -n "$hub" addr add 192.168.231.254/24 dev br0; ip -n "$hub" link set br0 up
plug() { # namespace, address
  ip netns add "$1"; ip -n "$1" link set lo up
  ip link add uplink netns "$1" type veth peer name "p$1" netns "$hub"
  ip -n "$hub" link set "p$1" master br0 up
  ip -n "$1" addr add "$2/24" dev uplink; ip -n "$1" link set uplink up
  ip -n "$1" route add default via 192.168.231.254
}
plug "$srv" 192.168.231.1
plug "$agt" 192.168.231.11
echo "nameserver 192.168.231.254" >"$dir/resolv.conf"
k() { nsenter --net="/var/run/netns/$srv" -- kubectl --kubeconfig "$dir/kc.yaml" --cache-dir "$dir/kcache" "$@"; }

nsenter --net="/var/run/netns/$srv" -- "$bonsai" server -d "$dir/server" --write-kubeconfig "$dir/kc.yaml" \
  --node-name s1 --node-ip 192.168.231.1 --pod-logs-dir "$dir/logs" --resolv-conf "$dir/resolv.conf" \
  >"$dir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do grep -q "bonsai server ready" "$dir/server.log" && break; sleep 0.1; done
grep -q "bonsai server ready" "$dir/server.log" || { echo "the server did not start" >&2; tail "$dir/server.log" >&2; exit 1; }
token=$(cat "$dir/server/server/token")
times=()
for run in $(seq "$runs"); do
  data="$dir/agent$run"
  start=$(date +%s%N)
  nsenter --net="/var/run/netns/$agt" -- "$bonsai" agent -s https://192.168.231.1:6443 -t "$token" -d "$data" \
    --node-name "a$run" --node-ip 192.168.231.11 --pod-logs-dir "$dir/logs" --resolv-conf "$dir/resolv.conf" \
    >"$dir/agent$run.log" 2>&1 &
  agent_pid=$!
  ready=""
  for _ in $(seq 3000); do
    if k get node "a$run" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; then
      ready=$(date +%s%N); break
    fi
    sleep 0.02
  done
  [ -n "$ready" ] || { echo "agent a$run did not get Ready" >&2; tail "$dir/agent$run.log" >&2; exit 1; }
  ms=$(( (ready - start) / 1000000 ))
  times+=("$ms")
  echo "join $run: ${ms} ms (agent start to node Ready)"
  kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""
  k delete node "a$run" --wait=false >/dev/null
  ip -n "$agt" link del flannel.1 2>/dev/null || true
  ip -n "$agt" link del cni0 2>/dev/null || true
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
echo "median join time: ${median} ms over $runs joins"
