#!/usr/bin/env bash
# Set everything up (system packages, .venv with the dev tools), check lint and types (ruff, mypy: a
# finding fails the run), then run the whole test suite. Extra arguments go to pytest
# (e.g. scripts/test.sh -k supervisor).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root (sudo $0): the tests make network namespaces" >&2; exit 1; fi
scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
