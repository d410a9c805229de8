#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test (tests/browser), once: nothing to do when a
# chromium binary is already on PATH. Needs root (or passwordless sudo) and apt-get; the test
# never downloads a browser of its own.
set -euo pipefail
for name in chromium chromium-browser; do
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    exit 0
  fi
done
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "the browser test needs Chromium: run 'apt-get install -y chromium' as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The package lists may be missing on a fresh machine; an update is cheap next to the install.
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  "${sudo[@]}" apt-get update -qq
fi
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
command -v chromium
