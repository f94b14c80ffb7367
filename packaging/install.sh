#!/bin/sh
# Installs and starts bonsai in one command, as k3s's install.sh does:
#
#   curl -sfL https://get.bonsai.example | sh -                  # a server, from the release
#   curl -sfL ... | BONSAI_URL=https://srv:6443 BONSAI_TOKEN=... sh -   # an agent joining srv
#   sudo ./packaging/install.sh                                  # from a checkout: builds it (cargo build --release)
#
# It checks the host (`bonsai check-config`), installs the binary, writes a systemd unit (or an OpenRC script;
# with neither, it starts bonsai supervised in the background and says so), an environment file, the
# bonsai-killall.sh and bonsai-uninstall.sh scripts, and a `kubectl` link to bonsai when no kubectl is installed.
#
# Environment (k3s's names, with BONSAI):
#   BONSAI_BIN                  a bonsai binary to install (else: a checkout builds one, else the release's)
#   INSTALL_BONSAI_VERSION      the release to download (default: the latest)
#   INSTALL_BONSAI_RELEASE_URL  where releases are (default https://github.com/bonsai-k8s/bonsai/releases)
#   INSTALL_BONSAI_SKIP_DOWNLOAD true: take the binary already in the bin dir
#   INSTALL_BONSAI_EXEC         the command and its flags: `server --disable servicelb`, or flags only (the
#                               command is `server`, or `agent` when BONSAI_URL is set)
#   INSTALL_BONSAI_SKIP_START   true: install, but do not start the service
#   INSTALL_BONSAI_SKIP_ENABLE  true: do not enable the service at boot (and do not start it)
#   INSTALL_BONSAI_SKIP_CHECK   true: do not stop when `bonsai check-config` finds something essential missing
#   INSTALL_BONSAI_SYMLINK      skip: no kubectl link; force: make it even when a kubectl is installed
#   INSTALL_BONSAI_KUBECTL_URL  a kubectl binary to fetch as <bin dir>/bonsai-kubectl (default with a release
#                               download: the official kubectl of the Kubernetes release bonsai serves)
#   INSTALL_BONSAI_BIN_DIR      where the binary and scripts go (default /usr/local/bin)
#   INSTALL_BONSAI_SYSTEMD_DIR  where the unit goes (default /etc/systemd/system)
#   BONSAI_URL, BONSAI_TOKEN    install an agent joining that server with that token
#   BONSAI_KUBECONFIG_MODE      the admin kubeconfig's mode (e.g. 644), written to the environment file
#   BONSAI_DATA_DIR             the data directory (default /var/lib/bonsai)
#   BONSAI_*                    every other one goes to the environment file, read by bonsai as its flags
set -eu

fatal() { echo "[ERROR] $*" >&2; exit 1; }
info() { echo "[INFO]  $*"; }

BIN_DIR=${INSTALL_BONSAI_BIN_DIR:-/usr/local/bin}
SYSTEMD_DIR=${INSTALL_BONSAI_SYSTEMD_DIR:-/etc/systemd/system}
DATA_DIR=${BONSAI_DATA_DIR:-/var/lib/bonsai}
RELEASE_URL=${INSTALL_BONSAI_RELEASE_URL:-https://github.com/bonsai-k8s/bonsai/releases}
KUBERNETES_VERSION=v1.33.0
LOG=/var/log/bonsai.log
RUN_DIR=/run/bonsai

# --- what to install: a server or an agent -------------------------------------------------------------------
set -- ${INSTALL_BONSAI_EXEC:-}
case "${1:-}" in
  server|agent) CMD=$1; shift ;;
  *) if [ -n "${BONSAI_URL:-}" ]; then CMD=agent; else CMD=server; fi ;;
esac
EXEC_ARGS="$*"
if [ "$CMD" = agent ]; then
  [ -n "${BONSAI_URL:-}" ] || fatal "an agent needs BONSAI_URL (the server, e.g. https://10.0.0.1:6443)"
  [ -n "${BONSAI_TOKEN:-}" ] || fatal "an agent needs BONSAI_TOKEN (the server's <data-dir>/server/token)"
  case "$BONSAI_URL" in https://*) ;; *) fatal "BONSAI_URL must be an https:// URL (got $BONSAI_URL)" ;; esac
  SERVICE=bonsai-agent
else
  SERVICE=bonsai
fi

# --- the host, first ---------------------------------------------------------------------------------------------
[ "$(uname -s)" = Linux ] || fatal "bonsai runs on Linux only (this is $(uname -s))"
[ "$(id -u)" -eq 0 ] || fatal "run as root (sudo $0)"
case $(uname -m) in
  x86_64|amd64) ARCH=amd64 ;;
  aarch64|arm64) ARCH=arm64 ;;
  armv7*|armhf) ARCH=arm ;;
  *) fatal "no bonsai release for this architecture ($(uname -m))" ;;
esac
for tool in mount umount ip nft; do
  command -v $tool >/dev/null 2>&1 || fatal "$tool is missing: install it (apt-get install iproute2 nftables mount)"
done

if [ -x /sbin/openrc-run ] || [ -x /usr/sbin/openrc-run ]; then
  MANAGER=openrc
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  MANAGER=systemd
else
  MANAGER=none
fi
if [ "$MANAGER" = systemd ]; then ENV_FILE=$SYSTEMD_DIR/$SERVICE.service.env; else ENV_FILE=/etc/bonsai/$SERVICE.env; fi

# --- the binary --------------------------------------------------------------------------------------------------
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
download() { # URL FILE
  if command -v curl >/dev/null 2>&1; then curl -fsSL -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then wget -qO "$2" "$1"
  else fatal "curl or wget is needed to download $1"; fi
}
SRC=
if [ -f "$0" ] && [ -f "$(dirname "$0")/../Cargo.toml" ] && [ -f "$(dirname "$0")/../cmd/bonsai/Cargo.toml" ]; then
  SRC=$(cd "$(dirname "$0")/.." && pwd)
fi
FROM_RELEASE=false
if [ -n "${BONSAI_BIN:-}" ]; then
  [ -x "$BONSAI_BIN" ] || fatal "BONSAI_BIN=$BONSAI_BIN is not an executable file"
  src_bin=$BONSAI_BIN
elif [ "${INSTALL_BONSAI_SKIP_DOWNLOAD:-false}" = true ]; then
  [ -x "$BIN_DIR/bonsai" ] || fatal "INSTALL_BONSAI_SKIP_DOWNLOAD=true, but there is no $BIN_DIR/bonsai"
  src_bin=$BIN_DIR/bonsai
elif [ -n "$SRC" ]; then
  command -v cargo >/dev/null 2>&1 || fatal "cargo is missing: install Rust (https://rustup.rs), or set BONSAI_BIN to a built binary"
  command -v cc >/dev/null 2>&1 || fatal "a C compiler is missing: apt-get install build-essential"
  [ -e /usr/include/seccomp.h ] || fatal "libseccomp's headers are missing: apt-get install libseccomp-dev"
  info "building bonsai (cargo build --release) in $SRC"
  (cd "$SRC" && cargo build --release --locked -p bonsai)
  src_bin=${CARGO_TARGET_DIR:-$SRC/target}/release/bonsai
  case "$src_bin" in /*) ;; *) src_bin=$SRC/$src_bin ;; esac
else
  FROM_RELEASE=true
  if [ -n "${INSTALL_BONSAI_VERSION:-}" ]; then base=$RELEASE_URL/download/$INSTALL_BONSAI_VERSION
  else base=$RELEASE_URL/latest/download; fi
  info "downloading bonsai-$ARCH from $base"
  download "$base/bonsai-$ARCH" "$TMP/bonsai" || fatal "cannot download $base/bonsai-$ARCH"
  download "$base/sha256sum-$ARCH.txt" "$TMP/sha256" || fatal "cannot download $base/sha256sum-$ARCH.txt"
  want=$(grep " bonsai-$ARCH\$" "$TMP/sha256" | awk '{print $1}')
  got=$(sha256sum "$TMP/bonsai" | awk '{print $1}')
  [ -n "$want" ] && [ "$want" = "$got" ] || fatal "bonsai-$ARCH's sha256 is $got, the release says ${want:-nothing}"
  chmod 0755 "$TMP/bonsai"
  src_bin=$TMP/bonsai
fi
"$src_bin" version >/dev/null 2>&1 || fatal "$src_bin does not run on this host"

info "checking the host (bonsai check-config)"
if ! "$src_bin" check-config >"$TMP/check" 2>&1; then
  grep -E '^  FAIL|^verdict' "$TMP/check" >&2 || cat "$TMP/check" >&2
  if [ "${INSTALL_BONSAI_SKIP_CHECK:-false}" != true ]; then
    fatal "this host lacks what bonsai needs (above; \`bonsai check-config\` shows every item); INSTALL_BONSAI_SKIP_CHECK=true installs anyway"
  fi
fi

mkdir -p "$BIN_DIR" /etc/bonsai
if [ "$src_bin" != "$BIN_DIR/bonsai" ]; then
  # Stop a running bonsai first only if it is this install's (an upgrade); the service restarts it below.
  install -m 0755 "$src_bin" "$BIN_DIR/bonsai.new"
  mv -f "$BIN_DIR/bonsai.new" "$BIN_DIR/bonsai"
fi
info "installed $("$BIN_DIR/bonsai" version | head -n 1) as $BIN_DIR/bonsai"

# --- kubectl ------------------------------------------------------------------------------------------------------
KUBECTL_URL=${INSTALL_BONSAI_KUBECTL_URL:-}
if [ -z "$KUBECTL_URL" ] && [ "$FROM_RELEASE" = true ]; then
  KUBECTL_URL=https://dl.k8s.io/release/$KUBERNETES_VERSION/bin/linux/$ARCH/kubectl
fi
existing_kubectl=$(command -v kubectl 2>/dev/null || true)
if [ -n "$existing_kubectl" ] && [ "$(readlink -f "$existing_kubectl")" = "$(readlink -f "$BIN_DIR/bonsai")" ]; then
  existing_kubectl=
fi
if [ -n "$KUBECTL_URL" ] && [ -z "$existing_kubectl" ]; then
  info "downloading kubectl from $KUBECTL_URL as $BIN_DIR/bonsai-kubectl"
  download "$KUBECTL_URL" "$TMP/kubectl" || fatal "cannot download $KUBECTL_URL"
  install -m 0755 "$TMP/kubectl" "$BIN_DIR/bonsai-kubectl"
fi
case "${INSTALL_BONSAI_SYMLINK:-}" in
  skip) ;;
  force) ln -sf bonsai "$BIN_DIR/kubectl"; info "linked $BIN_DIR/kubectl to bonsai (INSTALL_BONSAI_SYMLINK=force)" ;;
  *) if [ -z "$existing_kubectl" ] && [ ! -e "$BIN_DIR/kubectl" ]; then
       ln -sf bonsai "$BIN_DIR/kubectl"; info "linked $BIN_DIR/kubectl to bonsai (\`bonsai kubectl\`)"
     elif [ -n "$existing_kubectl" ]; then
       info "kubectl is installed ($existing_kubectl): no link made; \`bonsai kubectl\` uses it"
     fi ;;
esac

# --- the environment file --------------------------------------------------------------------------------------
umask 077
mkdir -p "$(dirname "$ENV_FILE")"
{
  echo "# bonsai's environment, written by install.sh: every BONSAI_* variable reads as its flag."
  env | grep -E '^BONSAI_' | grep -v -E '^BONSAI_BIN=' | sed -e 's/=\(.*\)/="\1"/' || true
} >"$ENV_FILE"
chmod 0600 "$ENV_FILE"
umask 022
info "wrote $ENV_FILE"

# --- killall and uninstall -------------------------------------------------------------------------------------
cat >"$BIN_DIR/bonsai-killall.sh" <<EOF
#!/bin/sh
# Stops bonsai and every pod it runs, and removes what they set up on the host (mounts, links, nft table,
# cgroups), keeping the cluster's data in $DATA_DIR. Written by install.sh.
[ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"
BIN_DIR=$BIN_DIR
DATA_DIR=$DATA_DIR
RUN_DIR=$RUN_DIR
EOF
cat >>"$BIN_DIR/bonsai-killall.sh" <<'EOF'

# The services, first, so that nothing restarts what goes below.
for service in bonsai bonsai-agent; do
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl stop "$service" >/dev/null 2>&1 || true
  fi
  if [ -x "/etc/init.d/$service" ] && command -v rc-service >/dev/null 2>&1; then
    rc-service "$service" stop >/dev/null 2>&1 || true
  fi
done
if [ -f "$RUN_DIR/supervisor.pid" ]; then
  kill "$(cat "$RUN_DIR/supervisor.pid")" 2>/dev/null || true
fi

# Processes: bonsai itself (server, agent, the containers' shims: their executable is bonsai, or, once their
# container runs, the small monitor bonsai writes to $DATA_DIR/agent/bin), then everything in a cgroup under
# bonsai's (the containers).
bonsai_pids() {
  bin=$(readlink -f "$BIN_DIR/bonsai" 2>/dev/null || echo "$BIN_DIR/bonsai")
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case "$exe" in "$bin"|"$bin (deleted)"|"$DATA_DIR"/agent/bin/bonsai-shim-monitor-*) echo "$pid" ;; esac
  done
}
container_pids() {
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    grep -q -E ':/bonsai(/|$)' "$p/cgroup" 2>/dev/null && echo "$pid"
  done
}
pids=$(bonsai_pids)
[ -n "$pids" ] && kill -TERM $pids 2>/dev/null
i=0; while [ -n "$(bonsai_pids)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
pids=$(bonsai_pids); [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
i=0
while [ $i -lt 50 ]; do
  pids=$(container_pids)
  [ -z "$pids" ] && break
  kill -KILL $pids 2>/dev/null
  sleep 0.1; i=$((i+1))
done

# Mounts: containers' root file systems, pods' pinned network namespaces and memory-backed volumes, deepest first.
for dir in "$DATA_DIR" "$RUN_DIR"; do
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
done

# The pod network: the veths on cni0, cni0, the VXLAN device, bonsai's nft table.
if command -v ip >/dev/null 2>&1; then
  for veth in $(ip -o link show master cni0 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link delete "$veth" 2>/dev/null || true
  done
  ip link delete cni0 2>/dev/null || true
  ip link delete flannel.1 2>/dev/null || true
fi
command -v nft >/dev/null 2>&1 && nft delete table ip bonsai 2>/dev/null
rm -rf "$DATA_DIR/agent/network/leases" "$RUN_DIR"

# cgroups: bonsai's branch in every hierarchy (v1) or the unified one (v2), leaves first; only empty ones go.
for root in /sys/fs/cgroup /sys/fs/cgroup/*; do
  [ -d "$root/bonsai" ] || continue
  find "$root/bonsai" -depth -type d -exec rmdir {} \; 2>/dev/null
done
exit 0
EOF
chmod 0755 "$BIN_DIR/bonsai-killall.sh"

cat >"$BIN_DIR/bonsai-uninstall.sh" <<EOF
#!/bin/sh
# Removes bonsai from this host entirely: stops it and its pods (bonsai-killall.sh), then removes the service,
# the binary, the scripts, the kubectl link, the configuration and every byte of data. Written by install.sh.
[ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"
BIN_DIR=$BIN_DIR
DATA_DIR=$DATA_DIR
SYSTEMD_DIR=$SYSTEMD_DIR
RUN_DIR=$RUN_DIR
LOG=$LOG
EOF
cat >>"$BIN_DIR/bonsai-uninstall.sh" <<'EOF'
set -u
"$BIN_DIR/bonsai-killall.sh"
for service in bonsai bonsai-agent; do
  if [ -f "$SYSTEMD_DIR/$service.service" ]; then
    systemctl disable "$service" >/dev/null 2>&1 || true
    rm -f "$SYSTEMD_DIR/$service.service" "$SYSTEMD_DIR/$service.service.env"
    systemctl daemon-reload >/dev/null 2>&1 || true
  fi
  if [ -f "/etc/init.d/$service" ]; then
    rc-update delete "$service" default >/dev/null 2>&1 || true
    rm -f "/etc/init.d/$service"
  fi
done
if [ -L "$BIN_DIR/kubectl" ] && [ "$(readlink "$BIN_DIR/kubectl")" = bonsai ]; then rm -f "$BIN_DIR/kubectl"; fi
rm -f "$BIN_DIR/bonsai-kubectl" "$BIN_DIR/bonsai-supervise.sh" "$BIN_DIR/bonsai-killall.sh"
rm -rf /etc/bonsai "$DATA_DIR" "$RUN_DIR" /var/log/pods
rm -f "$LOG" /etc/bash_completion.d/bonsai
rm -f "$BIN_DIR/bonsai" "$BIN_DIR/bonsai-uninstall.sh"
echo "bonsai is uninstalled"
EOF
chmod 0755 "$BIN_DIR/bonsai-uninstall.sh"
info "wrote $BIN_DIR/bonsai-killall.sh and $BIN_DIR/bonsai-uninstall.sh"
if [ -d /etc/bash_completion.d ]; then "$BIN_DIR/bonsai" completion bash >/etc/bash_completion.d/bonsai 2>/dev/null || true; fi

# --- the service -----------------------------------------------------------------------------------------------
EXEC_LINE="$BIN_DIR/bonsai $CMD${EXEC_ARGS:+ $EXEC_ARGS}"
skip_start=${INSTALL_BONSAI_SKIP_START:-false}
[ "${INSTALL_BONSAI_SKIP_ENABLE:-false}" = true ] && skip_start=true

case $MANAGER in
systemd)
  cat >"$SYSTEMD_DIR/$SERVICE.service" <<EOF
[Unit]
Description=bonsai, Kubernetes in one small binary ($CMD)
Documentation=https://github.com/bonsai-k8s/bonsai
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=exec
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-$ENV_FILE
# The containers' shims outlive a restart of bonsai (it adopts them again): stop only bonsai itself.
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=$EXEC_LINE
EOF
  info "wrote $SYSTEMD_DIR/$SERVICE.service"
  systemctl daemon-reload
  if [ "${INSTALL_BONSAI_SKIP_ENABLE:-false}" != true ]; then
    systemctl enable "$SERVICE" >/dev/null
    info "enabled $SERVICE at boot"
  fi
  if [ "$skip_start" != true ]; then
    info "starting $SERVICE (systemctl restart $SERVICE)"
    systemctl restart "$SERVICE"
  fi
  ;;
openrc)
  cat >"/etc/init.d/$SERVICE" <<EOF
#!/sbin/openrc-run
depend() {
    after network-online
    want cgroups
}
supervisor=supervise-daemon
name=$SERVICE
command="$BIN_DIR/bonsai"
command_args="$CMD $EXEC_ARGS"
output_log=$LOG
error_log=$LOG
pidfile="/var/run/$SERVICE.pid"
respawn_delay=5
respawn_max=0
# A stop waits for bonsai to close its store (OpenRC's default gives up after 5 s and leaves it running).
retry="SIGTERM/30/SIGKILL/5"
set -o allexport
if [ -f /etc/environment ]; then . /etc/environment; fi
if [ -f $ENV_FILE ]; then . $ENV_FILE; fi
set +o allexport
EOF
  chmod 0755 "/etc/init.d/$SERVICE"
  info "wrote /etc/init.d/$SERVICE"
  if [ "${INSTALL_BONSAI_SKIP_ENABLE:-false}" != true ]; then rc-update add "$SERVICE" default >/dev/null; fi
  if [ "$skip_start" != true ]; then rc-service "$SERVICE" restart; fi
  ;;
none)
  # No service manager: a small supervisor restarts bonsai when it exits, until bonsai-killall.sh stops it.
  cat >"$BIN_DIR/bonsai-supervise.sh" <<EOF
#!/bin/sh
# Runs bonsai in the background, restarting it 5 s after it exits (no systemd or OpenRC on this host).
# Written by install.sh; bonsai-killall.sh stops it.
set -a; . $ENV_FILE; set +a
mkdir -p $RUN_DIR
echo \$\$ >$RUN_DIR/supervisor.pid
trap 'kill \$child 2>/dev/null; wait \$child; rm -f $RUN_DIR/supervisor.pid; exit 0' TERM INT
while :; do
  $EXEC_LINE >>$LOG 2>&1 &
  child=\$!
  echo \$child >$RUN_DIR/$SERVICE.pid
  wait \$child
  sleep 5
done
EOF
  chmod 0755 "$BIN_DIR/bonsai-supervise.sh"
  if [ "$skip_start" != true ]; then
    if [ -f "$RUN_DIR/supervisor.pid" ] && kill -0 "$(cat "$RUN_DIR/supervisor.pid")" 2>/dev/null; then
      info "stopping the running bonsai"
      kill "$(cat "$RUN_DIR/supervisor.pid")"
      i=0; while [ -f "$RUN_DIR/supervisor.pid" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    fi
    mkdir -p "$RUN_DIR" "$(dirname "$LOG")"
    start_line=0; [ -f "$LOG" ] && start_line=$(wc -l <"$LOG")
    nohup "$BIN_DIR/bonsai-supervise.sh" >/dev/null 2>&1 &
    info "no systemd or OpenRC here: started $SERVICE supervised in the background ($BIN_DIR/bonsai-supervise.sh, pid $!), logging to $LOG; it does not start at boot"
    if [ "$CMD" = server ]; then
      i=0
      until tail -n +"$((start_line + 1))" "$LOG" 2>/dev/null | grep -q "bonsai server ready"; do
        [ $i -lt 600 ] || { tail -n 20 "$LOG" >&2; fatal "bonsai server did not report ready within 60 s; see $LOG"; }
        sleep 0.1; i=$((i+1))
      done
    fi
  fi
  ;;
esac

if [ "$skip_start" = true ]; then
  info "not started (INSTALL_BONSAI_SKIP_START/SKIP_ENABLE)"
elif [ "$CMD" = server ]; then
  info "bonsai server is running; data in $DATA_DIR, admin kubeconfig in /etc/bonsai/bonsai.yaml"
  info "try: kubectl get nodes   (or: bonsai kubectl get nodes; bonsai wait-ready waits for the node)"
else
  info "bonsai agent is running, joining $BONSAI_URL"
fi
info "stop everything: $BIN_DIR/bonsai-killall.sh; remove everything: $BIN_DIR/bonsai-uninstall.sh"
