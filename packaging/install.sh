#!/bin/sh
# Installs and starts bonsai, k3s-style.
#
# From a checkout:   sudo ./packaging/install.sh
#   builds `cargo build --release` (or takes BONSAI_BIN), installs it, and starts `bonsai server`.
#
# Environment (k3s's names, with BONSAI_):
#   BONSAI_BIN                   a bonsai binary to install instead of building one
#   INSTALL_BONSAI_BIN_DIR       where to install the binary (default /usr/local/bin)
#   INSTALL_BONSAI_EXEC          extra arguments for `bonsai server`
#   INSTALL_BONSAI_SKIP_START    true: install only, do not start
#   BONSAI_DATA_DIR              data directory (default /var/lib/bonsai)
#   INSTALL_BONSAI_LOG           log file when no service manager runs it (default /var/log/bonsai.log)
#
# This version starts the server: cluster store and API server (the admin kubeconfig goes to
# /etc/bonsai/bonsai.yaml). Node agent, systemd/OpenRC units, uninstall and killall scripts
# come with later issues.
set -eu

fatal() { echo "[ERROR] $*" >&2; exit 1; }
info() { echo "[INFO]  $*"; }

BIN_DIR=${INSTALL_BONSAI_BIN_DIR:-/usr/local/bin}
DATA_DIR=${BONSAI_DATA_DIR:-/var/lib/bonsai}
LOG=${INSTALL_BONSAI_LOG:-/var/log/bonsai.log}
RUN_DIR=${INSTALL_BONSAI_RUN_DIR:-/run/bonsai}
SRC=$(cd "$(dirname "$0")/.." && pwd)

# Check the host first.
[ "$(uname -s)" = Linux ] || fatal "bonsai runs on Linux only (this is $(uname -s))"
if [ "$(id -u)" -ne 0 ] && [ "$BIN_DIR" = /usr/local/bin ]; then
  fatal "run as root (sudo $0), or set INSTALL_BONSAI_BIN_DIR to a folder you can write"
fi

if [ -n "${BONSAI_BIN:-}" ]; then
  [ -x "$BONSAI_BIN" ] || fatal "BONSAI_BIN=$BONSAI_BIN is not an executable file"
  src_bin=$BONSAI_BIN
else
  [ -f "$SRC/Cargo.toml" ] || fatal "not run from a bonsai checkout, and BONSAI_BIN is not set"
  command -v cargo >/dev/null 2>&1 || fatal "cargo is missing: install Rust (https://rustup.rs), or set BONSAI_BIN to a built binary"
  command -v cc >/dev/null 2>&1 || fatal "a C compiler is missing: apt-get install build-essential"
  info "building bonsai (cargo build --release)"
  (cd "$SRC" && cargo build --release --locked -p bonsai)
  src_bin=$SRC/target/release/bonsai
fi

mkdir -p "$BIN_DIR"
install -m 0755 "$src_bin" "$BIN_DIR/bonsai.new"
mv -f "$BIN_DIR/bonsai.new" "$BIN_DIR/bonsai"
info "installed $("$BIN_DIR/bonsai" version | head -n 1) to $BIN_DIR/bonsai"

if [ "${INSTALL_BONSAI_SKIP_START:-false}" = true ]; then
  info "INSTALL_BONSAI_SKIP_START=true: not starting"
  exit 0
fi

# No service manager is assumed yet: start it in the background, supervised by its pid file.
mkdir -p "$RUN_DIR" "$(dirname "$LOG")"
pidfile=$RUN_DIR/bonsai.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  info "stopping the running bonsai (pid $(cat "$pidfile"))"
  kill "$(cat "$pidfile")"
  i=0; while kill -0 "$(cat "$pidfile")" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
fi
start_line=$(wc -l < "$LOG" 2>/dev/null || echo 0)
# shellcheck disable=SC2086 # INSTALL_BONSAI_EXEC is a list of arguments
nohup "$BIN_DIR/bonsai" server --data-dir "$DATA_DIR" ${INSTALL_BONSAI_EXEC:-} >>"$LOG" 2>&1 &
echo $! > "$pidfile"
info "started bonsai server (pid $!), logging to $LOG; no systemd or OpenRC unit is written by this version"

i=0
while [ $i -lt 300 ]; do
  if tail -n +"$((start_line + 1))" "$LOG" | grep -q "bonsai server ready"; then
    info "bonsai server is ready (data in $DATA_DIR)"
    exit 0
  fi
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -n 20 "$LOG" >&2; fatal "bonsai server exited; see $LOG"; }
  sleep 0.1; i=$((i+1))
done
fatal "bonsai server did not report ready within 30 s; see $LOG"
