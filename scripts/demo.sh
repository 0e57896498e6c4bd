#!/usr/bin/env bash
# Set up, then run the proxy against the bundled provider simulator with demo traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tokenaddons demo "$@"
