#!/usr/bin/env bash
# Set everything up (system packages, .venv with the dev tools) and run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k supervisor).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root (sudo $0): the tests make network namespaces" >&2; exit 1; fi
scripts/setup.sh --dev
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
