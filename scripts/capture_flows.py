"""Capture real Claude Code and Codex CLI sessions against the simulator into
tests/flows/ (`tokenaddons run --capture`), the sessions the test suite replays.

    .venv/bin/python scripts/capture_flows.py            # both
    .venv/bin/python scripts/capture_flows.py claude     # one

Claude Code runs the compress benchmark's coding session (tokenaddons.test.
coding_session: seven real tool calls over real output), which
benchmarks/bench_compress.py then measures from this capture. Codex runs one
real tool whose output is a build log (repeated lines, trailing blanks, a
pretty-printed JSON report).

Both are captured with scrub, compress and cache hints off: what went upstream
is what the client sent, billed as if sent direct. That is the baseline a
replay with other settings is compared with.
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
from tokenaddons.test import clients, coding_session  # noqa: E402

FLOWS = ROOT / "tests" / "flows"
AS_SENT = {"scrub_enabled": "false", "compress": "false", "cache_hints": "false"}
BUILD_LOG = ("echo tokenaddons-$((6*7)); for i in $(seq 1 40); do echo \"[build] compiling module $i ... ok   \"; "
             "echo \"  warning: variable 'tmp' is never used\"; done; "
             "printf '{\\n    \"modules\": 40,\\n    \"warnings\": 40,\\n    \"errors\": 0\\n}\\n'")


def capture(name: str, work: Path) -> Path:
    out = FLOWS / f"{name}.flow"
    with Simulator() as sim, Mitmdump(sim.url, work / name, {**AS_SENT, "capture_path": out}) as proxy:
        if name == "claude_code":
            done = clients.claude_code(work / name / "home", coding_session.ROOT, proxy.url,
                                       coding_session.CLAUDE_CODE_PROMPT, env=coding_session.ENV, timeout=900,
                                       tools="Bash Read")
            turns = sum(1 for r in sim.requests if r.model == "claude-sonnet-4-5" and (r.body or {}).get("tools"))
            ok = turns == coding_session.TURNS
        else:
            prompt = f"Check the build. [[tool:exec_command {json.dumps({'cmd': BUILD_LOG})}]]"
            done = clients.codex(work / name / "home", work, f"{proxy.url}/v1", prompt)
            ok = "tokenaddons-42" in done.stdout
    if done.returncode != 0 or not ok:
        raise SystemExit(f"{name} failed:\n{done.stdout}\n{done.stderr}")
    return out


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or ["claude_code", "codex"]:
            path = capture(name, Path(tmp))
            print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main([{"claude": "claude_code"}.get(n, n) for n in sys.argv[1:]])
