#!/usr/bin/env bash
# kubectl apply benchmark: the release bonsai binary in a network namespace of its own, the real kubectl.
# Times `kubectl apply -f` of a 200-object manifest (create), a re-apply with every object changed (strategic
# merge patches), an unchanged re-apply, and `kubectl apply --server-side`; compared in the same run with creating
# the same 200 objects one `kubectl create` at a time. For each, the server's CPU time (user + system, from
# /proc/<pid>/stat) is reported.
#
#   sudo tests/bench/kubectl_apply.sh [kubectl minor version, default 33]
set -euo pipefail
cd "$(dirname "$0")/../.."
minor=${1:-33}
kubectl_bin="$(dirname "$(readlink -f "$(command -v kubectl)")")/kubectl.1.$minor"
cargo build --release -q -p bonsai --bin bonsai
ns=bonsai-apply-bench-$$
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
ip netns exec "$ns" target/release/bonsai server --disable-agent -d "$dir/data" -o "$dir/kubeconfig" >"$dir/log" 2>&1 &
pid=$!
until [ -f "$dir/kubeconfig" ]; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/log"; exit 1; }
  sleep 0.01
done
k() { ip netns exec "$ns" "$kubectl_bin" --kubeconfig "$dir/kubeconfig" --cache-dir "$dir/cache" "$@"; }
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)

# 200 objects: 100 configmaps, 50 services, 50 deployments, in namespace $1, with image tag $2.
manifest() {
  local ns=$1 tag=$2
  for i in $(seq 1 100); do
    printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%s\n  namespace: %s\n  labels: {app: bench}\ndata:\n  key: "value-%s-%s"\n' "$i" "$ns" "$i" "$tag"
  done
  for i in $(seq 1 50); do
    printf -- '---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-%s\n  namespace: %s\nspec:\n  selector: {app: web-%s}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n  - {name: tag-%s, port: 81}\n' "$i" "$ns" "$i" "$tag"
    printf -- '---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-%s\n  namespace: %s\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web-%s}}\n  template:\n    metadata: {labels: {app: web-%s}}\n    spec:\n      containers:\n      - name: app\n        image: "registry.local/app:%s"\n        ports: [{containerPort: 8080}]\n' "$i" "$ns" "$i" "$i" "$tag"
  done
}

run() { # label, command...
  local label=$1; shift
  local before start end after
  before=$(ticks); start=$(date +%s%N)
  "$@" >/dev/null
  end=$(date +%s%N); after=$(ticks)
  printf '| %s | %d ms | %d ms |\n' "$label" $(( (end - start) / 1000000 )) $(( (after - before) * 1000 / hz ))
}

for space in apply one-by-one ssa; do k create namespace "$space" >/dev/null; done
manifest apply 1 >"$dir/v1.yaml"
manifest apply 2 >"$dir/v2.yaml"
manifest ssa 1 >"$dir/ssa.yaml"
mkdir "$dir/split"
manifest one-by-one 1 | awk -v d="$dir/split" '/^---$/{n++} {print > (d "/" n ".yaml")}'
k get --raw /openapi/v3 >/dev/null # warm kubectl's discovery cache, as a user's would be

echo "kubectl 1.$minor, 200 objects (100 configmaps, 50 services, 50 deployments)"
echo
echo "| operation | wall time | server CPU time |"
echo "|---|---:|---:|"
run "kubectl apply -f (create all 200)" k apply -f "$dir/v1.yaml"
run "kubectl apply -f (all 200 changed: strategic merge patches)" k apply -f "$dir/v2.yaml"
run "kubectl apply -f (unchanged)" k apply -f "$dir/v2.yaml"
run "kubectl apply --server-side -f (create all 200)" k apply --server-side -f "$dir/ssa.yaml"
one_by_one() { for f in "$dir"/split/*.yaml; do k create -f "$f"; done; }
run "kubectl create -f, one process per object (200)" one_by_one
echo
echo "server RSS after: $(awk '/^VmRSS/{printf "%.1f MB", $2/1024}' "/proc/$pid/status")"
