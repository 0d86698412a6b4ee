#!/usr/bin/env bash
# Set everything up (system packages, .venv) and run floodwatch on its defaults:
# capture on the default-route interface, report to the embedded API server on 127.0.0.1:8787.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root (sudo $0): capture and mitigation need it" >&2; exit 1; fi
scripts/setup.sh
CONFIG="${FLOODWATCH_CONFIG:-configs/default.toml}"
.venv/bin/python -m floodwatch.server.web.info "$CONFIG" || true
exec .venv/bin/floodwatch run --config "$CONFIG"
