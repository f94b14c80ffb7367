#!/usr/bin/env bash
# Datastore benchmark: the same API workload (tests/bench/apiserver_bench.rs: creates, gets, lists, watch
# fan-out and latency) against the release bonsai on its embedded store and on a real etcd (Debian's
# etcd-server, one member on the namespace's loopback), in one run, each server in a network namespace of its own.
#
#   sudo tests/bench/datastore.sh            (release build)
#   sudo BONSAI_BIN_DIR=target/debug tests/bench/datastore.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }
# BONSAI_BIN_DIR=dir measures the bonsai and apiserver-bench binaries there instead of building release ones.
if [ -n "${BONSAI_BIN_DIR:-}" ]; then
  bin=$BONSAI_BIN_DIR
else
  cargo build --release -q -p bonsai -p bonsai-e2e --bin bonsai --bin apiserver-bench
  bin=${CARGO_TARGET_DIR:-target}/release
fi
dir=$(mktemp -d)
pids=()
namespaces=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run() { # name, extra server arguments...
  local name=$1; shift
  local ns=bonsai-bench-$name-$$
  ip netns add "$ns"; namespaces+=("$ns")
  ip -n "$ns" link set lo up
  if [ "$name" = etcd ]; then
    ip netns exec "$ns" env ETCD_UNSUPPORTED_ARCH="$(uname -m)" etcd --name e0 --data-dir "$dir/etcd" \
      --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
      --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
      --initial-cluster e0=http://127.0.0.1:2380 --log-level error >"$dir/etcd.log" 2>&1 &
    pids+=($!)
    until ip netns exec "$ns" curl -s http://127.0.0.1:2379/health | grep -q '"health":"true"'; do sleep 0.1; done
  fi
  ip netns exec "$ns" "$bin/bonsai" server --disable-agent -d "$dir/$name" -o "$dir/$name.kubeconfig" "$@" \
    >"$dir/$name.log" 2>&1 &
  local pid=$!; pids+=("$pid")
  until [ -f "$dir/$name.kubeconfig" ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/$name.log"; exit 1; }
    sleep 0.01
  done
  echo "### $name"
  ip netns exec "$ns" "$bin/apiserver-bench" "$dir/$name/server/tls"
  echo
}

run embedded
run etcd --datastore-endpoint http://127.0.0.1:2379
