#!/usr/bin/env bash
# Set up, then run the test suite (unit, replay and end-to-end through a real mitmdump).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
