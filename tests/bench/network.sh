#!/usr/bin/env bash
# Pod network benchmark, in one run, every path made by `bonsai network` in network namespaces of its own:
#  - TCP throughput (iperf3, 5 s) and round-trip latency (ping, 200 packets) between two pods on one node (the
#    cni0 bridge) and between pods on two nodes over VXLAN, against a plain veth pair between two namespaces;
#  - the time to program the overlay: `bonsai network peers` with 250 peers (route + neighbour + FDB each);
#  - services (see below): ClusterIP connection overhead, and programming 1,000 services with 10 endpoints each.
#
#   sudo tests/bench/network.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v iperf3 >/dev/null || { apt-get install -y -qq iperf3 >/dev/null; }
command -v python3 >/dev/null || { apt-get install -y -qq python3 >/dev/null; }
command -v kubectl >/dev/null || { echo "tests/bench/network.sh: kubectl is needed on the PATH" >&2; exit 1; }
if [ -z "${BONSAI_BIN:-}" ]; then
  cargo build --release -q -p bonsai --bin bonsai
fi
bonsai=${BONSAI_BIN:-$PWD/target/release/bonsai}
p=bnb$$
names=(a b n1 n2 p1 p2 p3)
dir=$(mktemp -d)
cleanup() {
  for n in "${names[@]}"; do ip netns pids "$p$n" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$p$n" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # a signal exits, and so cleans up too
for n in "${names[@]}"; do ip netns add "$p$n"; ip -n "$p$n" link set lo up; done
in_ns() { local n=$1; shift; nsenter --net="/var/run/netns/$p$n" -- "$@"; }

throughput() { # from to address
  in_ns "$2" iperf3 -s -1 -D -p 5201 >/dev/null; sleep 0.3
  in_ns "$1" iperf3 -c "$3" -p 5201 -t 5 -J | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
latency() { # from address: average RTT in microseconds
  in_ns "$1" busybox ping -q -c 200 -i 0.005 "$2" 2>/dev/null | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p' | awk '{printf "%d\n", $1*1000}'
}

# Baseline: a veth pair.
ip link add bench0 netns "${p}a" type veth peer name bench0 netns "${p}b"
ip -n "${p}a" addr add 192.168.250.1/24 dev bench0; ip -n "${p}a" link set bench0 up
ip -n "${p}b" addr add 192.168.250.2/24 dev bench0; ip -n "${p}b" link set bench0 up

# Two nodes linked by a veth pair; two pods on node 1, one on node 2.
ip link add uplink netns "${p}n1" type veth peer name uplink netns "${p}n2"
ip -n "${p}n1" addr add 192.168.251.1/24 dev uplink; ip -n "${p}n1" link set uplink up
ip -n "${p}n2" addr add 192.168.251.2/24 dev uplink; ip -n "${p}n2" link set uplink up
net1() { in_ns n1 "$bonsai" network -d "$dir/n1" --pod-cidr 10.42.0.0/24 --node-ip 192.168.251.1 "$@"; }
net2() { in_ns n2 "$bonsai" network -d "$dir/n2" --pod-cidr 10.42.1.0/24 --node-ip 192.168.251.2 "$@"; }
mac() { python3 -c 'import json,sys; print(json.loads(json.load(sys.stdin)["flannel.alpha.coreos.com/backend-data"])["VtepMAC"])'; }
mac1=$(net1 peers | mac); mac2=$(net2 peers | mac)
net1 peers --peer "n2,10.42.1.0/24,192.168.251.2,$mac2" >/dev/null
net2 peers --peer "n1,10.42.0.0/24,192.168.251.1,$mac1" >/dev/null
net1 add p1 "/var/run/netns/${p}p1" >/dev/null
net1 add p2 "/var/run/netns/${p}p2" >/dev/null
net2 add p3 "/var/run/netns/${p}p3" >/dev/null

base_t=$(throughput a b 192.168.250.2); base_l=$(latency a 192.168.250.2)
bridge_t=$(throughput p1 p2 10.42.0.3); bridge_l=$(latency p1 10.42.0.3)
vxlan_t=$(throughput p1 p3 10.42.1.2); vxlan_l=$(latency p1 10.42.1.2)
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
echo "TCP throughput (Gbit/s): veth $base_t, bridge $bridge_t ($(ratio "$bridge_t" "$base_t")x), vxlan $vxlan_t ($(ratio "$vxlan_t" "$base_t")x)"
echo "ping RTT (us, average of 200): veth $base_l, bridge $bridge_l ($(ratio "$bridge_l" "$base_l")x), vxlan $vxlan_l ($(ratio "$vxlan_l" "$base_l")x)"

# Programming the overlay: 250 peers at once, then back to none.
peers=()
for i in $(seq 2 251); do peers+=(--peer "m$i,10.42.$i.0/24,192.168.251.$((i % 250 + 3)),0a:00:00:00:$(printf %02x $((i / 256))):$(printf %02x $((i % 256)))"); done
start=$(date +%s%N); net1 --cluster-cidr 10.42.0.0/16 peers "${peers[@]}" >/dev/null; end=$(date +%s%N)
routes=$(ip -n "${p}n1" route | grep -c 'dev flannel.1')
echo "overlay: 250 peers -> $routes routes (with neighbour and FDB entries) programmed in $(( (end - start) / 1000000 )) ms"
start=$(date +%s%N); net1 peers >/dev/null; end=$(date +%s%N)
echo "overlay: all removed in $(( (end - start) / 1000000 )) ms"

# Services, through a real server (in node 1's namespace) and `bonsai network run` (the proxy):
#  - connection setup through a ClusterIP against the pod IP directly (python3 connect/receive/close loops);
#  - a full sync of 1,000 services with 10 endpoints each (the proxy restarted over them), and one change after.
kubectl_n1() { in_ns n1 kubectl --kubeconfig "$dir/kc.yaml" "$@"; }
in_ns n1 "$bonsai" server --disable-agent -d "$dir/server" --write-kubeconfig "$dir/kc.yaml" >"$dir/server.log" 2>&1 &
for _ in $(seq 100); do [ -s "$dir/kc.yaml" ] && break; sleep 0.1; done
echo '{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}' | kubectl_n1 create -f - >/dev/null
proxy() {
  # nsenter execs bonsai, so $! is the proxy itself.
  RUST_LOG=network=debug nsenter --net="/var/run/netns/${p}n1" -- "$bonsai" network -d "$dir/n1" \
    --node-ip 192.168.251.1 run --kubeconfig "$dir/kc.yaml" --node-name n1 >"$dir/proxy.log" 2>&1 &
  proxy_pid=$!
}
proxy
in_ns p2 python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 5300)); s.listen(512)
while True:
    c, _ = s.accept(); c.sendall(b"x"); c.close()' &
cat <<JSON | kubectl_n1 create -f - >/dev/null
{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "default"},
  "spec": {"ports": [{"port": 80, "targetPort": 5300}]}},
 {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
  "metadata": {"name": "echo-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "echo"}},
  "addressType": "IPv4", "ports": [{"name": "", "port": 5300, "protocol": "TCP"}],
  "endpoints": [{"addresses": ["10.42.0.3"], "nodeName": "n1"}]}]}
JSON
echo_ip=$(kubectl_n1 get svc echo -o jsonpath='{.spec.clusterIP}')
connect() { # address port count: mean microseconds per connection (connect, receive one byte, close)
  in_ns p1 python3 -c '
import socket, sys, time
addr, n = (sys.argv[1], int(sys.argv[2])), int(sys.argv[3])
for _ in range(100):
    s = socket.create_connection(addr); s.recv(1); s.close()
t = time.perf_counter()
for _ in range(n):
    s = socket.create_connection(addr); s.recv(1); s.close()
print(int((time.perf_counter() - t) / n * 1e6))' "$1" "$2" "$3"
}
for _ in $(seq 100); do connect "$echo_ip" 80 1 >/dev/null 2>&1 && break; sleep 0.1; done
direct=$(connect 10.42.0.3 5300 3000); via=$(connect "$echo_ip" 80 3000)
echo "connection setup (us, mean of 3000): pod IP $direct, ClusterIP $via ($(ratio "$via" "$direct")x)"

items=()
for i in $(seq 1 1000); do
  eps=""
  for j in $(seq 1 10); do eps+="${eps:+,}{\"addresses\": [\"10.42.$((i / 100 + 10)).$(( (i % 100) * 2 + j))\"], \"nodeName\": \"n1\"}"; done
  items+=("{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"s$i\", \"namespace\": \"default\"}, \"spec\": {\"ports\": [{\"port\": 80, \"targetPort\": 8080}]}}")
  items+=("{\"apiVersion\": \"discovery.k8s.io/v1\", \"kind\": \"EndpointSlice\", \"metadata\": {\"name\": \"s$i-1\", \"namespace\": \"default\", \"labels\": {\"kubernetes.io/service-name\": \"s$i\"}}, \"addressType\": \"IPv4\", \"ports\": [{\"name\": \"\", \"port\": 8080, \"protocol\": \"TCP\"}], \"endpoints\": [$eps]}")
done
(IFS=,; echo "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [${items[*]}]}") > "$dir/services.json"
kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true
start=$(date +%s%N); kubectl_n1 create -f "$dir/services.json" >/dev/null; end=$(date +%s%N)
echo "API: 1,000 services and 1,000 endpoint slices created in $(( (end - start) / 1000000 )) ms"
proxy
synced() { grep -a 'service rules in step' "$dir/proxy.log" | grep -c "ports=$1" || true; }
for _ in $(seq 300); do [ "$(synced 1002)" -ge 1 ] && break; sleep 0.1; done
line=$(grep -a 'service rules in step' "$dir/proxy.log" | grep -a 'ports=1002' | head -1)
elements=$(in_ns n1 nft list map ip bonsai service-ips | grep -o ' : goto' | wc -l)
echo "proxy: full sync of 1,000 services x 10 endpoints: $(sed -n 's/.*elapsed_us=\([0-9]*\).*/\1/p' <<<"$line" | awk '{printf "%d", $1/1000}') ms, $(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$line") bytes of nft script; $elements map entries"
kubectl_n1 delete endpointslice s500-1 >/dev/null
for _ in $(seq 100); do [ "$(grep -ac 'service rules in step' "$dir/proxy.log")" -ge 2 ] && break; sleep 0.1; done
line=$(grep -a 'service rules in step' "$dir/proxy.log" | tail -1)
echo "proxy: one service's endpoints removed, incremental sync: $(sed -n 's/.*elapsed_us=\([0-9]*\).*/\1/p' <<<"$line" | awk '{printf "%.1f", $1/1000}') ms, $(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$line") bytes"
kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true
net1 cleanup; net2 cleanup
