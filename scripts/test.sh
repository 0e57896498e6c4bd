#!/usr/bin/env bash
# Set up, check that a plain `pip install .` works on a fresh venv, then run the
# test suite (unit, replay and end-to-end through a real mitmdump).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check_install.sh
# Two workers, a test file each at a time (its module fixtures stay in one
# process): the end-to-end tests mostly wait on the mitmdump they start, so the
# run takes about half as long on two cores (TEST_WORKERS=0 runs it in one).
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
