#!/usr/bin/env bash
# Start-up benchmark: `bonsai server` (with its node's agent) in a network namespace of its own, timed from exec to
#  - /readyz answering ok (curl with the admin's certificate, polled every 5 ms), and
#  - the node Ready (`bonsai wait-ready`, started at the same moment, polling every 50 ms),
# on a fresh data directory (PKI, store and node made from nothing: a first start) and again on the same one (a
# restart), RUNS times each (default 5); prints each run and the medians.
#
#   sudo tests/bench/startup.sh        (BONSAI_BIN=path: measure that binary instead of building; RUNS=n)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${BONSAI_BIN:-}" ]; then
  cargo build --release -q -p bonsai --bin bonsai
fi
bonsai=${BONSAI_BIN:-$PWD/target/release/bonsai}
runs=${RUNS:-5}
ns=bsu$$
dir=$(mktemp -d)
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  nsenter --net="/var/run/netns/$ns" -- "$bonsai" network -d "$dir/data" cleanup >/dev/null 2>&1 || true
  for m in $(grep -o "$dir[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$ns"
ip -n "$ns" link set lo up
in_ns() { nsenter --net="/var/run/netns/$ns" -- "$@"; }
ns_now() { date +%s%N; }

one_run() { # label; prints "label readyz_ms node_ready_ms"
  local t0 t_readyz t_node tls=$dir/data/server/tls
  rm -f "$dir/kc.yaml"
  t0=$(ns_now)
  nsenter --net="/var/run/netns/$ns" -- "$bonsai" server -d "$dir/data" --write-kubeconfig "$dir/kc.yaml" --node-name n1 \
    --pod-logs-dir "$dir/logs" --resolv-conf "$dir/resolv.conf" >>"$dir/server.log" 2>&1 &
  server_pid=$!
  nsenter --net="/var/run/netns/$ns" -- "$bonsai" wait-ready --timeout 60s --kubeconfig "$dir/kc.yaml" >>"$dir/wait.log" 2>&1 &
  local waiter=$!
  until [ -f "$tls/client-admin.key" ] &&
    [ "$(in_ns curl -sk --cert "$tls/client-admin.crt" --key "$tls/client-admin.key" https://127.0.0.1:6443/readyz 2>/dev/null)" = ok ]; do
    sleep 0.005
  done
  t_readyz=$(ns_now)
  wait "$waiter" || { cat "$dir/wait.log" >&2; tail -5 "$dir/server.log" >&2; exit 1; }
  t_node=$(ns_now)
  echo "$1 $(( (t_readyz - t0) / 1000000 )) $(( (t_node - t0) / 1000000 ))"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  server_pid=
}

echo "nameserver 127.0.0.1" >"$dir/resolv.conf"
results=$dir/results
for i in $(seq "$runs"); do
  one_run first >>"$results"
  one_run restart >>"$results"
  in_ns "$bonsai" network -d "$dir/data" cleanup >/dev/null 2>&1 || true
  for m in $(grep -o "$dir/data[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$dir/data"
done
echo "run      exec->/readyz ok (ms)   exec->node Ready (ms)"
awk '{ printf "%-8s %20d %23d\n", $1, $2, $3 }' "$results"
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
for kind in first restart; do
  r=$(awk -v k="$kind" '$1 == k { print $2 }' "$results" | median)
  n=$(awk -v k="$kind" '$1 == k { print $3 }' "$results" | median)
  echo "median $kind start: exec->/readyz ${r} ms, exec->node Ready ${n} ms"
done
