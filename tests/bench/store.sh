#!/usr/bin/env bash
# Store benchmark: bonsai's embedded store on redb and on sled, and a real etcd, doing the same
# work (durable creates/s at 1, 8 and 64 writers; a 10,000-key range; watch latency to 100
# watchers). Each runs in a process of its own so that peak RSS is per store.
#
#   tests/bench/store.sh            full run (about 2 minutes)
#   tests/bench/store.sh --quick    short run
#
# Installs Debian's etcd-server and protobuf-compiler when missing. etcd listens on 127.0.0.1 only
# and is stopped, with its data, when its run ends. Prints a Markdown table; compare it with the
# promises in SPECIFICATION.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo bench -p embedded-store --bench store_vs_etcd --no-run >/dev/null 2>&1 || cargo bench -p embedded-store --bench store_vs_etcd --no-run
rows=()
for target in redb sled etcd; do
  out=$(cargo bench -q -p embedded-store --bench store_vs_etcd -- --targets "$target" "$@")
  rows+=("$(grep "^| \(bonsai/\)\?$target " <<<"$out")")
done
echo
echo "| store | creates/s, 1 writer | 8 writers | 64 writers | range 10k keys, 2 pages (ms, p50) | watch p50 / p99 from write issued (ms) | from write acked (ms) | disk (MB) | peak RSS (MB) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
etcd64=$(awk -F'|' '/^\| etcd /{gsub(/ /,"",$5); print $5}' <<<"${rows[2]}")
for i in 0 1; do
  awk -F'|' -v e="$etcd64" '{n=$2; gsub(/ /,"",n); c=$5; gsub(/ /,"",c); printf "%s: %.2fx etcd'"'"'s durable creates/s at 64 writers\n", n, c/e}' <<<"${rows[$i]}"
done
