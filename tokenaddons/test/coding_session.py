"""The coding session the compress benchmark runs and tests/flows/claude_code.flow
holds: one task whose tool calls read real files and run real commands in this
checkout, with the output agents resend on every later turn (a source file read
twice, a coloured `pytest -v` run repeated, a JSON file, `git log --stat`,
`pip list`). The simulator plays the prompt's `[[tool:...]]` directives as one
tool call per turn, in order (tokenaddons.sim.answers)."""
from __future__ import annotations

import json
import shlex
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # commands run here (the test paths below are relative)
SITE = Path(sysconfig.get_paths()["purelib"])
SOURCE = SITE / "httpx" / "_urls.py"
JSON_FILE = next(SITE.glob("hypothesis-*.dist-info/sboms/*.json"), SITE / "pip" / "_vendor" / "bom.cdx.json")
PYTHON = sys.executable
PYTEST = (f"{PYTHON} -m pytest -v --color=yes -p no:cacheprovider tests/unit/test_sse.py tests/unit/test_tokens.py "
          "tests/unit/test_pricing.py tests/unit/test_intake.py tests/unit/test_stats.py tests/unit/test_guard.py")
STEPS = [("read", str(SOURCE)), ("run", PYTEST), ("read", str(JSON_FILE)), ("run", "git log --stat -n 6"),
         ("run", f"{PYTHON} -m pip list --disable-pip-version-check"), ("read", str(SOURCE)), ("run", PYTEST)]
TASK = "The URL parsing tests look flaky; find out what is going on. "
ENV = {"PYTHONDONTWRITEBYTECODE": "1"}  # the test runs leave the checkout as it was


def directives(read: str, read_arg: str, run: str, run_arg: str, read_via_run: bool = False,
               run_extra: dict | None = None) -> str:
    """The prompt: the task and one directive per step, for a client whose read
    tool is `read` (argument `read_arg`) and whose shell tool is `run`."""
    out = []
    for kind, arg in STEPS:
        if kind == "read" and not read_via_run:
            out.append(f"[[tool:{read} {json.dumps({read_arg: arg})}]]")
        else:
            command = f"cat {shlex.quote(arg)}" if kind == "read" else arg
            out.append(f"[[tool:{run} {json.dumps({run_arg: command, **(run_extra or {})})}]]")
    return TASK + " ".join(out)


CLAUDE_CODE_PROMPT = directives("Read", "file_path", "Bash", "command")
TURNS = len(STEPS) + 1  # the agent's turns: one per tool call, then its answer
