#!/usr/bin/env bash
# Install floodwatch as a systemd service from this checkout (after scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$(pwd)
install -d -m 0755 /etc/floodwatch
[ -f /etc/floodwatch/floodwatch.toml ] || install -m 0600 configs/default.toml /etc/floodwatch/floodwatch.toml
sed "s#@PREFIX@#${prefix}#g" scripts/floodwatch.service > /etc/systemd/system/floodwatch.service
systemd-analyze verify /etc/systemd/system/floodwatch.service
systemctl daemon-reload
systemctl enable --now floodwatch.service
systemctl --no-pager status floodwatch.service || true
