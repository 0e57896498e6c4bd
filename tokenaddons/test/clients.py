"""The real agent clients scripts/setup.sh installs (Claude Code, Codex CLI),
run the way the end-to-end tests and the captured test flows run them: offline,
against a local provider (the simulator, through the proxy), with a real tool loop."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from mitmproxy import io

TOOLS = Path(__file__).resolve().parents[2] / ".tools" / "node_modules" / ".bin"
CLAUDE = TOOLS / "claude"
CODEX = TOOLS / "codex"
TOKENADDONS = Path(sys.executable).with_name("tokenaddons")

# The simulator answers a prompt's [[tool:NAME ARGS]] with that tool call, so
# each client runs one real tool and sends its output back: two turns.
CLAUDE_PROMPT = 'Check the machine. [[tool:Bash {"command": "echo tokenaddons-$((6*7))"}]]'
CODEX_PROMPT = 'Check the machine. [[tool:exec_command {"cmd": "echo tokenaddons-$((6*7))"}]]'


def claude_code(home: Path, cwd: Path, base_url: str | None = None, prompt: str = CLAUDE_PROMPT,
                env: dict[str, str] | None = None, timeout: float = 180,
                tools: str = "Bash") -> subprocess.CompletedProcess:
    """`claude -p PROMPT` with its `tools` allowed. `base_url` is the
    Anthropic endpoint it talks to (None: its own default, api.anthropic.com);
    `env` adds to a clean environment (a proxy, a CA, custom headers)."""
    home.mkdir(parents=True, exist_ok=True)
    full = {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_API_KEY": "sk-ant-test",
            "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_TELEMETRY": "1", "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "ANTHROPIC_SMALL_FAST_MODEL": "claude-haiku-4-5", **(env or {})}
    if base_url:
        full["ANTHROPIC_BASE_URL"] = base_url
    # a model the offline price table knows, so every row carries a cost
    return subprocess.run([str(CLAUDE), "-p", prompt, "--allowedTools", tools, "--model", "claude-sonnet-4-5"],
                          env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def codex(home: Path, cwd: Path, base_url: str, prompt: str = CODEX_PROMPT, project: str | None = "codex",
          env: dict[str, str] | None = None, timeout: float = 180,
          args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`codex exec [ARGS] PROMPT` with a model provider at `base_url` (Codex ignores
    OPENAI_BASE_URL: a provider in its config.toml points it there)."""
    home.mkdir(parents=True, exist_ok=True)
    headers = f'http_headers = {{ "X-Tokenaddons-Project" = "{project}" }}\n' if project else ""
    (home / "config.toml").write_text(f"""
model = "gpt-5"
model_provider = "proxy"

[model_providers.proxy]
name = "tokenaddons"
base_url = "{base_url}"
wire_api = "responses"
supports_websockets = false
env_key = "OPENAI_API_KEY"
{headers}""")
    full = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home), "OPENAI_API_KEY": "sk-test",
            **(env or {})}
    return subprocess.run([str(CODEX), "exec", "--skip-git-repo-check", *args, prompt], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def eval_env(*args: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a bash shell holds after `eval "$(tokenaddons env ARGS)"`."""
    script = f'eval "$({TOKENADDONS} env {" ".join(args)})" && env -0'
    done = subprocess.run(["bash", "-c", script], capture_output=True, check=True,
                          env=dict(os.environ) if environ is None else environ)
    return dict(line.split("=", 1) for line in done.stdout.decode().split("\0") if "=" in line)


# hop-by-hop and framing headers: the connection sets its own
NOT_RESENT = ("host", "content-length", "transfer-encoding", "connection", "keep-alive")


def resend(capture: Path, base_url: str, timeout: float = 300) -> int:
    """The client of a captured session, as it was: each captured request sent
    again to `base_url`, byte for byte, in the order they were made, each answer
    read to its end. How many were sent."""
    with open(capture, "rb") as f:
        flows = [fl for fl in io.FlowReader(f).stream() if getattr(fl, "request", None) is not None]
    flows.sort(key=lambda fl: fl.request.timestamp_start or 0)
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        for fl in flows:
            r = fl.request
            headers = [(k, v) for k, v in r.headers.items(multi=True) if k.lower() not in NOT_RESENT]
            with client.stream(r.method, r.path, headers=headers, content=r.raw_content or b"") as answer:
                answer.read()
    return len(flows)
