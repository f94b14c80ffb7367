#!/usr/bin/env bash
# API server benchmark: the release bonsai binary in a network namespace of its own, measured by
# tests/bench/apiserver_bench.rs (creates, gets, lists of 1,000 and 10,000 configmaps, watch
# fan-out to 100 watchers), plus start-up time, idle RSS and RSS after 10,000 objects.
#
#   sudo tests/bench/apiserver.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p bonsai -p bonsai-e2e --bin bonsai --bin apiserver-bench
ns=bonsai-bench-$$
dir=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # a signal exits, and so cleans up too
ip netns add "$ns"
ip -n "$ns" link set lo up
rss() { awk '/^VmRSS/{printf "%.1f MB", $2/1024}' "/proc/$1/status"; }

start=$(date +%s%N)
ip netns exec "$ns" target/release/bonsai server --disable-agent -d "$dir/data" -o "$dir/kubeconfig" >"$dir/log" 2>&1 &
pid=$!
until [ -f "$dir/kubeconfig" ]; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/log"; exit 1; }
  sleep 0.005
done
ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
sleep 2
idle=$(rss "$pid")
ip netns exec "$ns" target/release/apiserver-bench "$dir/data/server/tls"
echo
echo "start to ready (kubeconfig written), fresh data dir: ${ready_ms} ms"
echo "idle RSS: $idle; RSS after 10,000 configmaps and the watch run: $(rss "$pid")"
echo "binary size: $(du -h target/release/bonsai | cut -f1)"
