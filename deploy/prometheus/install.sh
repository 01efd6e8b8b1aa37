#!/bin/sh
# Finds Debian's `prometheus` package (prometheus and promtool), installing it when missing, and prints
# the directory that holds both binaries. Idempotent; the tests call it.
#
#   deploy/prometheus/install.sh            unpack the package into the cache (nothing started, nothing
#                                           registered with dpkg): $MCPVISOR_CACHE_DIR/prometheus/usr/bin
#   deploy/prometheus/install.sh --system   apt-get install it (Debian then runs it as a service on :9090;
#                                           point it at deploy/prometheus/prometheus.yml)
set -eu

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  dirname "$(command -v promtool)"
  exit 0
fi

updated=""
apt_update() {
  [ -n "$updated" ] && return 0
  echo "[mcpvisor] apt-get update" >&2
  apt-get update -q >&2
  updated=1
}

if [ "${1:-}" = "--system" ]; then
  apt-get install -y -q --no-install-recommends prometheus >&2 || { apt_update && apt-get install -y -q --no-install-recommends prometheus >&2; }
  dirname "$(command -v promtool)"
  exit 0
fi

cache="${MCPVISOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mcpvisor}/prometheus"
if [ -x "$cache/usr/bin/prometheus" ] && [ -x "$cache/usr/bin/promtool" ]; then
  echo "$cache/usr/bin"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[mcpvisor] downloading Debian's prometheus package" >&2
if ! (cd "$work" && apt-get download -q -o APT::Sandbox::User=root prometheus >&2); then
  apt_update
  (cd "$work" && apt-get download -q -o APT::Sandbox::User=root prometheus >&2)
fi
mkdir -p "$work/root" "$(dirname "$cache")"
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
# Another process may have finished first; either copy is the same package.
mv -T "$work/root" "$cache" 2>/dev/null || [ -x "$cache/usr/bin/prometheus" ]
echo "$cache/usr/bin"
