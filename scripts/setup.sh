#!/usr/bin/env bash
# Sets up floodwatch on a fresh Debian/Ubuntu machine: system packages and the .venv.
# Idempotent; run as root (it installs packages). Usage: scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1

APT_PKGS=(tshark tcpdump iproute2 nftables iptables ipset netsniff-ng softflowd pmacct python3-venv python3-pip openssl)
# The weblog tests run nginx (with TLS) and flood it with h2load (nghttp2-client) and ab (apache2-utils).
if [ "$DEV" = 1 ]; then APT_PKGS+=(nginx nghttp2-client apache2-utils); fi
# The dashboard's browser tests drive Debian's headless Chromium (large: only with --dev).
if [ "$DEV" = 1 ]; then APT_PKGS+=(chromium chromium-driver); fi
# The /metrics tests scrape the server and the agent with Debian's real Prometheus (only with --dev).
if [ "$DEV" = 1 ]; then APT_PKGS+=(prometheus); fi
# The server's PostgreSQL backend is tested against a throwaway cluster of Debian's PostgreSQL (--dev).
if [ "$DEV" = 1 ]; then APT_PKGS+=(postgresql); fi
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
if [ "$DEV" = 1 ]; then
  .venv/bin/pip install -q -e '.[dev]'
else
  .venv/bin/pip install -q -e .
fi
echo "floodwatch set up: $(pwd)/.venv/bin/floodwatch"
