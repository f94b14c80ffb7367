#!/usr/bin/env bash
# Fetches Debian's OpenRC (openrc, librc1, libeinfo1) for the end-to-end test of install.sh's OpenRC path and
# unpacks it into tests/.tools/openrc, without installing it: installed, it would make this host an OpenRC one
# (install.sh prefers OpenRC when /sbin/openrc-run exists), while the test puts it into a sandbox of its own.
# Idempotent; prints the unpacked root.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/openrc
if [ -x "$dest/sbin/openrc-run" ] && [ -x "$dest/sbin/supervise-daemon" ]; then
  echo "$PWD/$dest"; exit 0
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download openrc librc1 libeinfo1 >/dev/null 2>&1) || {
  apt-get update -qq >/dev/null 2>&1 || true
  (cd "$work" && apt-get download openrc librc1 libeinfo1 >/dev/null)
}
rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$dest.tmp"; done
rm -rf "$dest"; mv "$dest.tmp" "$dest"
echo "$PWD/$dest"
