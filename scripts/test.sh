#!/usr/bin/env bash
# Set up, check that a plain `pip install .` works on a fresh venv, then run the
# test suite (unit, replay and end-to-end through a real mitmdump).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check_install.sh
exec .venv/bin/python -m pytest -q "$@"
