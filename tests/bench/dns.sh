#!/usr/bin/env bash
# Cluster DNS benchmark, against the real server running its node's agent in a network namespace of its own,
# with dnsmasq as the upstream resolver in the uplink's namespace (as the e2e tests run it):
#  - queries/s (dnsperf, 10 clients, up to 100 outstanding, 10 s) for cluster names and for cached upstream
#    names, asked at the kube-dns Service address (10.43.0.10) from the node;
#  - p50/p99 latency at a fixed 2,000 queries/s (dnsperf -v, every query's time), for the same two sets;
#  - the same upstream names asked of dnsmasq itself, for comparison.
#
#   sudo tests/bench/dns.sh        (BONSAI_BIN=path: measure that binary instead of building)
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in kubectl dnsperf dnsmasq; do
  command -v "$tool" >/dev/null || { echo "tests/bench/dns.sh: $tool is needed (apt-get install dnsperf dnsmasq-base)" >&2; exit 1; }
done
if [ -z "${BONSAI_BIN:-}" ]; then
  cargo build --release -q -p bonsai --bin bonsai
fi
bonsai=${BONSAI_BIN:-$PWD/target/release/bonsai}
ns=bdn$$
up=bdu$$
dir=$(mktemp -d)
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  for m in $(grep -o "$dir[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns pids "$up" 2>/dev/null | xargs -r kill 2>/dev/null || true
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

# The upstream: dnsmasq answering a few names itself.
ip netns exec "$up" dnsmasq --no-resolv --no-hosts --user=root --pid-file="$dir/dnsmasq.pid" --bind-interfaces \
  --listen-address=192.168.209.2 --cache-size=10000 \
  --host-record=web.external.test,192.0.2.11 --host-record=api.external.test,192.0.2.12 \
  --host-record=db.external.test,192.0.2.13
echo "nameserver 192.168.209.2" >"$dir/resolv.conf"

nsenter --net="/var/run/netns/$ns" -- "$bonsai" server -d "$dir/data" --write-kubeconfig "$dir/kc.yaml" --node-name n1 \
  --pod-logs-dir "$dir/logs" --resolv-conf "$dir/resolv.conf" >"$dir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do grep -q "cluster DNS endpoint published" "$dir/server.log" && break; sleep 0.1; done
grep -q "cluster DNS endpoint published" "$dir/server.log" || { echo "the cluster DNS did not start" >&2; tail "$dir/server.log" >&2; exit 1; }
# Services to look up: the packaged ones and ten more.
for i in $(seq 10); do
  echo "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"svc$i\"}, \"spec\": {\"ports\": [{\"name\": \"http\", \"port\": 80}]}}"
done | k apply -f - >/dev/null
for _ in $(seq 100); do
  in_ns dnsperf -s 10.43.0.10 -n 1 -d <(echo "svc10.default.svc.cluster.local A") 2>/dev/null | grep -q "Queries completed: *1 " && break
  sleep 0.1
done

cluster=$dir/cluster.txt upstream=$dir/upstream.txt
{
  echo "kubernetes.default.svc.cluster.local A"
  echo "kube-dns.kube-system.svc.cluster.local A"
  echo "_http._tcp.svc1.default.svc.cluster.local SRV"
  for i in $(seq 10); do echo "svc$i.default.svc.cluster.local A"; done
  echo "missing.default.svc.cluster.local A"
} >"$cluster"
printf '%s\n' "web.external.test A" "api.external.test A" "db.external.test A" >"$upstream"
# Warm the forwarder's cache.
in_ns dnsperf -s 10.43.0.10 -n 3 -d "$upstream" >/dev/null 2>&1

throughput() { # server file
  in_ns dnsperf -s "$1" -d "$2" -c 10 -l 10 2>/dev/null | awk '/Queries per second/ {printf "%d", $4}'
}
latency() { # server file -> "p50 p99" in ms, at 2,000 queries/s for 5 s
  in_ns dnsperf -s "$1" -d "$2" -Q 2000 -l 5 -v 2>/dev/null \
    | awk '$1 == ">" {print $NF}' | sort -g \
    | awk '{v[NR] = $1} END { if (NR == 0) { print "- -"; exit } printf "%.3f %.3f", v[int(NR * 0.5) + 1] * 1000, v[int(NR * 0.99) + 1] * 1000 }'
}
rss() { awk '/^VmRSS/{print $2}' "/proc/$server_pid/status"; }

printf '%-40s %10s %10s %10s\n' "what" "queries/s" "p50 ms" "p99 ms"
for row in "bonsai, cluster names|10.43.0.10|$cluster" "bonsai, cached upstream names|10.43.0.10|$upstream" \
  "dnsmasq (the upstream), same names|192.168.209.2|$upstream"; do
  IFS='|' read -r what server file <<<"$row"
  qps=$(throughput "$server" "$file")
  read -r p50 p99 <<<"$(latency "$server" "$file")"
  printf '%-40s %10s %10s %10s\n' "$what" "$qps" "$p50" "$p99"
done
echo "server RSS after the runs: $(( $(rss) / 1024 )) MB"
