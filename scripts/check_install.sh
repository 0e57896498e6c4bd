#!/usr/bin/env bash
# A plain `pip install .` (no dev extra, as a user installs it) into a fresh
# venv must resolve and work: the dev extra can steer pip around a conflict a
# user would hit. Run by scripts/test.sh when pyproject.toml changed since the
# last pass (always on a clean clone).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.plain-install-checked
if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
"$PY" -m venv "$tmp/v"
# --no-compile: the same resolution and files, without byte-compiling every
# dependency (mitmproxy's among them) for modules nobody imports here
if ! "$tmp/v/bin/pip" install -q --no-compile . >"$tmp/pip.log" 2>&1; then
  tail -40 "$tmp/pip.log" >&2
  echo "check_install: a plain 'pip install .' into a fresh venv failed (above)" >&2
  exit 1
fi
# every module imports with only the declared requirements (none may lean on a
# package another requirement happens to bring), the command runs, and the
# launcher (package data) and the whole bundle load in mitmdump
"$tmp/v/bin/python" - <<'PY'
import importlib, pkgutil, tokenaddons
for m in pkgutil.walk_packages(tokenaddons.__path__, "tokenaddons."):
    if not m.name.endswith("__main__"):  # that one runs the command
        importlib.import_module(m.name)
PY
"$tmp/v/bin/tokenaddons" --help >/dev/null
: >"$tmp/none.flow"
"$tmp/v/bin/mitmdump" -n -r "$tmp/none.flow" -s "$("$tmp/v/bin/tokenaddons" script-path)" \
  --set store_path="$tmp/events.db" >"$tmp/mitmdump.log" 2>&1 || true
if ! grep -q "events go to" "$tmp/mitmdump.log" || grep -qi "error\|traceback" "$tmp/mitmdump.log"; then
  cat "$tmp/mitmdump.log" >&2
  echo "check_install: the bundle did not load in the plain install's mitmdump" >&2
  exit 1
fi
echo "check_install: a plain 'pip install .' into a fresh venv works ($(( $(date +%s) - start )) s)"
touch "$stamp"
