#!/usr/bin/env bash
# Create .venv (if needed) and install tokenaddons with its test tools into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.tokenaddons-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi

# The newest anthropic and openai SDKs, in a venv of their own (they need
# h11>=0.16; mitmproxy 11 pins h11<=0.14): the proxy must work with them too.
if [ ! -x .venv-newest/bin/python ]; then
  "$PY" -m venv .venv-newest
  .venv-newest/bin/pip install -q anthropic openai >/dev/null 2>&1 \
    || { echo "setup: could not install the newest SDKs; their end-to-end test will be skipped" >&2; rm -rf .venv-newest; }
fi

# A real Redis for the team-mode tests (skipped where it cannot be installed).
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; } \
      >/dev/null 2>&1 || echo "setup: could not install redis-server; the team-mode tests will be skipped" >&2
  else
    echo "setup: redis-server is missing (apt-get install redis-server, as root); the team-mode tests will be skipped" >&2
  fi
fi

# Real agent clients for the end-to-end tests (skipped where npm is missing),
# pinned so a new release cannot change what the tests see.
if command -v npm >/dev/null 2>&1 && [ ! -x .tools/node_modules/.bin/claude ]; then
  npm install --silent --no-audit --no-fund --prefix .tools @anthropic-ai/claude-code@2.1.197 >/dev/null \
    || echo "setup: could not install Claude Code; its end-to-end test will be skipped" >&2
fi
if command -v npm >/dev/null 2>&1 && [ ! -x .tools/node_modules/.bin/codex ]; then
  npm install --silent --no-audit --no-fund --prefix .tools @openai/codex@0.169.0 >/dev/null \
    || echo "setup: could not install Codex CLI; its end-to-end test will be skipped" >&2
fi

# iptables for the transparent-mode test (it runs as root, in a network namespace
# of its own; skipped with the reason elsewhere). Installed from the distribution.
if [ "$(id -u)" = 0 ] && ! command -v iptables >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iptables; } >/dev/null 2>&1 \
    || echo "setup: could not install iptables; the transparent-mode test will be skipped" >&2
fi
