"""Capture real Claude Code and Codex CLI sessions against the simulator into
tests/flows/ (`tokenaddons run --capture`), the sessions the test suite replays.

    .venv/bin/python scripts/capture_flows.py            # both
    .venv/bin/python scripts/capture_flows.py claude     # one

Each session runs one real tool whose output is a build log (repeated lines,
trailing blanks, a pretty-printed JSON report): the kind of tool output agents
resend on every later turn.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tokenaddons.process import Mitmdump  # noqa: E402
from tokenaddons.sim import Simulator  # noqa: E402
from tokenaddons.test import clients  # noqa: E402

FLOWS = ROOT / "tests" / "flows"
BUILD_LOG = ("echo tokenaddons-$((6*7)); for i in $(seq 1 40); do echo \"[build] compiling module $i ... ok   \"; "
             "echo \"  warning: variable 'tmp' is never used\"; done; "
             "printf '{\\n    \"modules\": 40,\\n    \"warnings\": 40,\\n    \"errors\": 0\\n}\\n'")


def prompt(tool: str, key: str) -> str:
    return f"Check the build. [[tool:{tool} {json.dumps({key: BUILD_LOG})}]]"


def capture(name: str, work: Path) -> Path:
    out = FLOWS / f"{name}.flow"
    with Simulator() as sim, Mitmdump(sim.url, work / name, {"capture_path": out}) as proxy:
        if name == "claude_code":
            done = clients.claude_code(work / name / "home", work, proxy.url, prompt("Bash", "command"))
        else:
            done = clients.codex(work / name / "home", work, f"{proxy.url}/v1", prompt("exec_command", "cmd"))
    if done.returncode != 0 or "tokenaddons-42" not in done.stdout:
        raise SystemExit(f"{name} failed:\n{done.stdout}\n{done.stderr}")
    return out


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or ["claude_code", "codex"]:
            path = capture(name, Path(tmp))
            print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main([{"claude": "claude_code"}.get(n, n) for n in sys.argv[1:]])
