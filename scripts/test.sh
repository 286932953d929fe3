#!/usr/bin/env bash
# Set up, then run the default test suite (slow checks are opt-in: `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m pytest -q "$@"
