#!/bin/sh
# Installs Debian's chromium for the status page's browser test, once; prints the binary's path.
# Idempotent: does nothing when chromium is already installed. Needs root (or sudo) for apt.
set -eu
find_chromium() {
  for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  done
  return 1
}
if find_chromium; then exit 0; fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
  echo "chromium is missing and this user cannot install it (not root, no sudo)" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
  $SUDO apt-get update -qq >&2
fi
$SUDO apt-get install -y -qq --no-install-recommends chromium >&2
find_chromium
