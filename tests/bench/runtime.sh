#!/usr/bin/env bash
# Container runtime benchmark, in one run on the same busybox image:
#  - start a container that runs `true` and wait for it to exit: `bonsai containers run` (the whole path: CLI,
#    overlay mount, spec, shim, libcontainer, exit status) against `runc run` of the same bundle (Debian's runc);
#  - pull + unpack of a 50 MB image from a local registry: `bonsai images pull` against `skopeo copy` +
#    `umoci unpack`;
#  - the shim's RSS while its container runs.
#
#   sudo tests/bench/runtime.sh [runs, default 20]     (BONSAI_BIN=path: measure that binary instead of building)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-20}
if [ -z "${BONSAI_BIN:-}" ]; then
  cargo build --release -q -p bonsai --bin bonsai
fi
bonsai=${BONSAI_BIN:-$PWD/target/release/bonsai}
ns=bonsai-runtime-bench-$$
dir=$(mktemp -d)
cleanup() {
  for m in $(grep -o "$dir[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  if [ -n "${registry:-}" ]; then kill "$registry" 2>/dev/null || true; wait "$registry" 2>/dev/null || true; fi
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # a signal exits, and so cleans up too
ip netns add "$ns"
ip -n "$ns" link set lo up
in_ns() { nsenter --net="/var/run/netns/$ns" -- "$@"; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

# The image: busybox, built with umoci; and a 50 MB variant with one more layer of random data.
L=$dir/layout
umoci init --layout "$L"
umoci new --image "$L:base"
umoci unpack --image "$L:base" "$dir/b" >/dev/null
mkdir -p "$dir/b/rootfs/bin"
cp /bin/busybox "$dir/b/rootfs/bin/"
ln -s busybox "$dir/b/rootfs/bin/true"
umoci repack --image "$L:base" "$dir/b"
umoci config --image "$L:base" --tag v1 --config.cmd /bin/true
rm -rf "$dir/b"
umoci unpack --image "$L:v1" "$dir/b" >/dev/null
head -c $((50 * 1024 * 1024)) /dev/urandom >"$dir/b/rootfs/blob"
umoci repack --image "$L:big" "$dir/b"
rm -rf "$dir/b"

data=$dir/data
skopeo copy -q "oci:$L:v1" "docker-archive:$dir/v1.tar:bench/busybox:v1"
"$bonsai" images -d "$data" import "$dir/v1.tar" >/dev/null

# runc's bundle: the same image unpacked by umoci, which writes a runc config.json.
umoci unpack --image "$L:v1" "$dir/runc-bundle" >/dev/null
python3 - "$dir/runc-bundle/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["args"] = ["/bin/true"]
spec["process"]["terminal"] = False
json.dump(spec, open(path, "w"))
EOF

start=$(date +%s%N)
for i in $(seq 1 "$runs"); do
  in_ns "$bonsai" containers -d "$data" run --name "b$i" docker.io/bench/busybox:v1 -- /bin/true 2>/dev/null
done
end=$(date +%s%N)
bonsai_ms=$(( $(ms "$start" "$end") ))
for i in $(seq 1 "$runs"); do "$bonsai" containers -d "$data" rm "b$i" >/dev/null; done

start=$(date +%s%N)
for i in $(seq 1 "$runs"); do
  in_ns runc --root "$dir/runc-state" run --bundle "$dir/runc-bundle" "r$i" >/dev/null
done
end=$(date +%s%N)
runc_ms=$(( $(ms "$start" "$end") ))

# Shim memory with five containers running: RSS of one shim, and its PSS and private (USS) memory from
# smaps_rollup (PSS shares the binary's pages among the shims that map them; USS is what one more costs).
for i in 1 2 3 4 5; do
  in_ns "$bonsai" containers -d "$data" run --name "idle$i" --detach docker.io/bench/busybox:v1 -- /bin/busybox sleep 60 >/dev/null
done
sleep 1 # the shims hand over to their monitors (the small static bonsai-shim-monitor the runtime writes out)
shim_pid=$(python3 -c "import json;print(json.load(open('$data/agent/containers/idle1/state.json'))['shim_pid'])")
shim_rss=$(awk '/^VmRSS/{print $2}' "/proc/$shim_pid/status")
shim_pss=$(awk '/^Pss:/{print $2}' "/proc/$shim_pid/smaps_rollup")
shim_private=$(awk '/^Private_(Clean|Dirty):/{s+=$2} END{print s}' "/proc/$shim_pid/smaps_rollup")
shim_exe=$(basename "$(readlink "/proc/$shim_pid/exe")")
for i in 1 2 3 4 5; do "$bonsai" containers -d "$data" rm --force "idle$i" >/dev/null; done

# Pull + unpack of the 50 MB image from docker-registry in the namespace.
cat >"$dir/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $dir/registry}}
http: {addr: 127.0.0.1:5000}
EOF
nsenter --net="/var/run/netns/$ns" -- docker-registry serve "$dir/registry.yml" >/dev/null 2>&1 &
registry=$!
until in_ns curl -sf http://127.0.0.1:5000/v2/ >/dev/null; do sleep 0.1; done
in_ns skopeo copy -q --dest-tls-verify=false "oci:$L:big" docker://127.0.0.1:5000/bench/big:v1
start=$(date +%s%N)
in_ns "$bonsai" images -d "$dir/pull-data" pull 127.0.0.1:5000/bench/big:v1 >/dev/null
end=$(date +%s%N)
pull_bonsai=$(ms "$start" "$end")
start=$(date +%s%N)
in_ns skopeo copy -q --src-tls-verify=false docker://127.0.0.1:5000/bench/big:v1 "oci:$dir/skopeo-layout:big"
umoci unpack --image "$dir/skopeo-layout:big" "$dir/skopeo-bundle" >/dev/null
end=$(date +%s%N)
pull_reference=$(ms "$start" "$end")

echo "| measure | bonsai | reference | ratio |"
echo "|---|---:|---:|---:|"
printf '| start a container running `true` and wait for its exit (mean of %d) | %d ms | %d ms (runc run) | %.2f |\n' \
  "$runs" $((bonsai_ms / runs)) $((runc_ms / runs)) "$(echo "$bonsai_ms / $runc_ms" | bc -l)"
printf '| pull + unpack of a 50 MB image from a local registry | %d ms | %d ms (skopeo copy + umoci unpack) | %.2f |\n' \
  "$pull_bonsai" "$pull_reference" "$(echo "$pull_bonsai / $pull_reference" | bc -l)"
printf '| shim memory per running container, 5 running: RSS / PSS / private (USS) | %d / %d / %d kB (%s) | | |\n' "$shim_rss" "$shim_pss" "$shim_private" "$shim_exe"
