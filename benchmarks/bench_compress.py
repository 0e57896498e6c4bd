"""Billed dollars of multi-turn coding sessions, direct to the simulator and
through a real mitmdump with the bundle, each from a cold provider cache.

Sessions (the simulator answers a scripted prompt with one tool call per turn;
every tool really runs and its real output goes back):
  (a) an agent loop with the anthropic SDK that sets no cache hints
  (b) the same loop with the openai SDK (Chat Completions)
  (c) Claude Code (its own breakpoints): the session captured in
      tests/flows/claude_code.flow, its requests sent again as Claude Code sent
      them (the session `tokenaddons replay` is tested on); with --live,
      Claude Code itself runs the same task
  (d) Codex CLI (Responses, its own prompt_cache_key)
  (e) the anthropic SDK loop placing its own breakpoints (as Claude Code does)
Each turn's tool output is real text (tokenaddons.test.coding_session): a
source file and a JSON file from the installed packages, a coloured `pytest -v`
run, `git log --stat`, `pip list`; the file is read twice and the test run
repeated.

Printed: dollars billed per session direct and through the proxy, their
ratio, the billed-token breakdown (uncached input, cache write, cache read,
output), the agent's turns both ways, and whether every line of every tool
output still reached upstream (whitespace and escape codes aside; scrub is
off, see PROXY_SETS). With
--lossy, (c) and (d) run a third time with compress_lossy=true.

    .venv/bin/python benchmarks/bench_compress.py [--sessions abcde] [--lossy] [--live]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mitmproxy import io as flow_io

from tokenaddons.engines import pricing
from tokenaddons.engines.compressors import DELTA_HEAD, REFERENCE
from tokenaddons.engines.usage import Usage
from tokenaddons.process import Mitmdump
from tokenaddons.sim import Simulator
from tokenaddons.test import clients
from tokenaddons.test.coding_session import CLAUDE_CODE_PROMPT, ENV, ROOT, directives

CLAUDE_CODE_FLOW = ROOT / "tests" / "flows" / "claude_code.flow"
# Every addon at its defaults but scrub, which replaces the e-mail addresses and IPs in these
# outputs (httpx's own test URLs) with placeholders by design: the line check is about compression.
PROXY_SETS = {"scrub_enabled": "false"}

SYSTEM = """You are a coding agent working in the user's repository. You read files, run commands and
explain what you find. Work step by step: look at the relevant code before you change anything, run the
tests to see what fails, and keep your explanations short and concrete.

Rules:
- Read a file before you edit it; never guess its content.
- Prefer small, targeted commands; avoid commands that print megabytes of output.
- Run the test suite after every change and report what changed in its result.
- Never run destructive commands (rm -rf, git reset --hard, force pushes) without being asked.
- When a command fails, read its error output carefully before trying something else.
- Quote file paths and line numbers when you refer to code.
- If the task is ambiguous, state your assumption and continue.

Style of your answers: plain text, no more than a few short paragraphs, code in fenced blocks. Say what
you did, what you found and what remains. """ * 3


def tool_specs(kind: str) -> list[dict]:
    read = ("read_file", "Read a text file and return its content.", {"path": {"type": "string"}})
    run = ("bash", "Run a shell command in the repository and return its output.", {"command": {"type": "string"}})
    grep = ("search", "Search the repository for a regular expression.", {"pattern": {"type": "string"}})
    specs = [read, run, grep]
    if kind == "anthropic":
        return [{"name": n, "description": d, "input_schema": {"type": "object", "properties": p,
                                                                "required": list(p)}} for n, d, p in specs]
    return [{"type": "function", "function": {"name": n, "description": d, "parameters": {
        "type": "object", "properties": p, "required": list(p)}}} for n, d, p in specs]


def run_tool(name: str, args: dict) -> str:
    # as agents' tools do: bytes decoded, carriage returns kept (no newline translation)
    if name == "read_file":
        return Path(args["path"]).read_bytes().decode("utf-8", "replace")
    if name == "bash":
        done = subprocess.run(args["command"], shell=True, cwd=ROOT, capture_output=True, timeout=300,
                              env={**os.environ, **ENV})
        return (done.stdout + done.stderr).decode("utf-8", "replace")
    return "no matches"


# ---------------------------------------------------------------- the sessions

def anthropic_loop(url: str, model: str = "claude-sonnet-4-5", own_breakpoints: bool = False) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=url, api_key="sk-ant-bench", max_retries=0, timeout=300)
    system: object = SYSTEM
    if own_breakpoints:
        system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    messages: list[dict] = [{"role": "user", "content": directives("read_file", "path", "bash", "command")}]
    while True:
        sent = messages
        if own_breakpoints:  # the last block of the newest message, as Claude Code does
            last = dict(messages[-1])
            content = last["content"]
            if not isinstance(content, list):
                content = [{"type": "text", "text": content}]
            last["content"] = content[:-1] + [{**content[-1], "cache_control": {"type": "ephemeral"}}]
            sent = messages[:-1] + [last]
        m = client.messages.create(model=model, max_tokens=2048, system=system, tools=tool_specs("anthropic"),
                                   messages=sent)
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]})
        if m.stop_reason != "tool_use":
            return
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": b.id, "content": run_tool(b.name, b.input)}
            for b in m.content if b.type == "tool_use"]})


def chat_loop(url: str, model: str = "gpt-4.1") -> None:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0, timeout=300)
    messages: list[dict] = [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": directives("read_file", "path", "bash", "command")}]
    while True:
        choice = client.chat.completions.create(model=model, messages=messages, tools=tool_specs("openai")).choices[0]
        messages.append(choice.message.model_dump(exclude_none=True))
        if choice.finish_reason != "tool_calls":
            return
        for call in choice.message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": run_tool(call.function.name, json.loads(call.function.arguments))})


def claude_code(url: str, home: Path) -> None:
    out = clients.claude_code(home, ROOT, url, CLAUDE_CODE_PROMPT, env=ENV, timeout=900, tools="Bash Read")
    if out.returncode != 0:
        raise RuntimeError(f"Claude Code failed: {out.stderr[-2000:]}{out.stdout[-2000:]}")


def claude_code_captured(url: str, home: Path) -> None:
    clients.resend(CLAUDE_CODE_FLOW, url)


def codex(url: str, home: Path) -> None:
    # wait for the test run to end (Codex hands back a running command's output after 10 s by default)
    prompt = directives("exec_command", "cmd", "exec_command", "cmd", read_via_run=True,
                        run_extra={"yield_time_ms": 120_000})
    out = clients.codex(home, ROOT, f"{url}/v1", prompt, project=None, env=ENV, timeout=900,
                        args=("--dangerously-bypass-approvals-and-sandbox",))
    if out.returncode != 0:
        raise RuntimeError(f"Codex failed: {out.stderr[-2000:]}{out.stdout[-2000:]}")


@dataclass
class Session:
    key: str
    name: str
    target: float
    api: str  # what the main turns speak
    model: str
    run: object  # fn(url, home)
    needs: Path | None = None


SESSIONS = [
    Session("a", "anthropic SDK, no hints", 0.30, "anthropic.messages", "claude-sonnet-4-5",
            lambda url, home: anthropic_loop(url)),
    Session("b", "openai SDK, Chat", 0.85, "openai.chat", "gpt-4.1", lambda url, home: chat_loop(url)),
    Session("c", "Claude Code", 0.95, "anthropic.messages", "claude-sonnet-4-5", claude_code_captured,
            CLAUDE_CODE_FLOW),
    Session("d", "Codex CLI", 0.95, "openai.responses", "gpt-5", codex, clients.CODEX),
    Session("e", "anthropic SDK, own breakpoints", 1.00, "anthropic.messages", "claude-sonnet-4-5",
            lambda url, home: anthropic_loop(url, own_breakpoints=True)),
]


# ---------------------------------------------------------------- what a run billed and sent

@dataclass
class Run:
    usd: float = 0.0
    output_usd: float = 0.0  # of which for output tokens
    uncached: int = 0
    write: int = 0
    read: int = 0
    output: int = 0
    turns: int = 0
    requests: int = 0
    lines: int = 0  # lines of tool output checked
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0


def bill(sim: Simulator, session: Session, run: Run) -> None:
    for r in sim.requests:
        if r.usage is None:
            continue
        u = r.usage
        provider = "anthropic" if "/v1/messages" in r.path else "openai"
        written = u["write_5m"] + u["write_1h"]
        total = u["input"] + (u["read"] + written if provider == "anthropic" else 0)
        usage = Usage(input_tokens=total, cache_read_tokens=u["read"], cache_write_tokens=written,
                      cache_write_5m_tokens=u["write_5m"], cache_write_1h_tokens=u["write_1h"],
                      output_tokens=u["output"])
        run.usd += pricing.price(provider, r.model, usage) or 0.0
        run.output_usd += pricing.price(provider, r.model, Usage(output_tokens=u["output"])) or 0.0
        run.uncached += usage.uncached_input_tokens
        run.write += written
        run.read += u["read"]
        run.output += u["output"]
        run.requests += 1
        if r.model == session.model and (r.body or {}).get("tools"):
            run.turns += 1


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.")
SPACE = re.compile(r"\s+")
REF = re.compile(re.escape(REFERENCE).replace(r"\{call\}", "(?P<call>.+?)"))
DELTA = re.compile(re.escape(DELTA_HEAD).replace(r"\{call\}", "(?P<call>.+?)"))
DELTA_LINE = re.compile(r"line (?P<n>\d+): (?P<text>.*)")


def tool_outputs(api: str, body: dict) -> dict[str, str]:
    """Tool call id -> output text, in a request's history."""
    out: dict[str, str] = {}
    if api == "anthropic.messages":
        for msg in body.get("messages") or []:
            for block in msg.get("content") if isinstance(msg.get("content"), list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    inner = block.get("content")
                    out[block["tool_use_id"]] = inner if isinstance(inner, str) else "\n".join(
                        p.get("text", "") for p in inner or [] if isinstance(p, dict))
    elif api == "openai.chat":
        for msg in body.get("messages") or []:
            if msg.get("role") == "tool":
                out[msg["tool_call_id"]] = msg["content"] if isinstance(msg["content"], str) else json.dumps(
                    msg["content"])
    else:
        for item in body.get("input") or []:
            if isinstance(item, dict) and item.get("type") in ("function_call_output", "custom_tool_call_output"):
                out[item["call_id"]] = item["output"] if isinstance(item["output"], str) else json.dumps(
                    item["output"])
    return out


def visible_lines(text: str) -> list[str]:
    """A tool output's lines as a terminal leaves them: escape codes out, the
    last redraw of each line, surrounding whitespace gone, blank lines dropped."""
    lines = []
    for line in ANSI.sub("", text.replace("\r\n", "\n")).split("\n"):
        line = line.rsplit("\r", 1)[-1].strip()
        if line:
            lines.append(line)
    return lines


def resolve(outputs: dict[str, str], text: str) -> str:
    """An output as the model can read it: a reference to an earlier output is
    that output, a delta is that output with the lines it gives replaced."""
    if m := REF.fullmatch(text.strip()):
        return resolve(outputs, outputs.get(m.group("call"), ""))
    head, _, rest = text.partition("\n")
    if m := DELTA.fullmatch(head):
        lines = resolve(outputs, outputs.get(m.group("call"), "")).split("\n")
        for line in rest.split("\n"):
            if (d := DELTA_LINE.fullmatch(line)) and int(d.group("n")) <= len(lines):
                lines[int(d.group("n")) - 1] = d.group("text")
        return "\n".join(lines)
    return text


def check_lines(session: Session, sent: list[dict], received: list[dict], run: Run) -> None:
    """Every line of every tool output the client sent reached upstream (in the
    output itself, or in the earlier output a reference points at)."""
    client: dict[str, str] = {}
    for body in sent:
        client.update(tool_outputs(session.api, body))
    upstream: dict[str, str] = {}
    for body in received:
        upstream.update(tool_outputs(session.api, body))
    squashed = {call: SPACE.sub("", ANSI.sub("", resolve(upstream, text))) for call, text in upstream.items()}
    for call, text in client.items():
        there = squashed.get(call, "")
        for line in visible_lines(text):
            run.lines += 1
            if SPACE.sub("", line) not in there:
                run.missing.append(line)


def main_bodies(session: Session, bodies: list[dict]) -> list[dict]:
    return [b for b in bodies if isinstance(b, dict) and b.get("model") == session.model and b.get("tools")]


def play(session: Session, work: Path, proxied: bool, sets: dict | None = None) -> Run:
    run = Run()
    home = work / "home"
    home.mkdir(parents=True)
    start = time.monotonic()
    with Simulator() as sim:
        if not proxied:
            session.run(sim.url, home)
            bill(sim, session, run)
            run.seconds = time.monotonic() - start
            return run
        flows = work / "client.flow"
        with Mitmdump(sim.url, work / "bundle", {**PROXY_SETS, **(sets or {})}) as proxy, \
                Mitmdump(proxy.url, work / "recorder", {"save_stream_file": flows}, script=False) as recorder:
            session.run(recorder.url, home)
        bill(sim, session, run)
        with open(flows, "rb") as f:
            sent = [json.loads(fl.request.content) for fl in flow_io.FlowReader(f).stream()
                    if fl.request.method == "POST" and fl.request.content]
        check_lines(session, main_bodies(session, sent), main_bodies(session, [r.body for r in sim.requests]), run)
    run.seconds = time.monotonic() - start
    return run


# ---------------------------------------------------------------- report

def pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", default="abcde", help="which sessions to run (letters)")
    ap.add_argument("--lossy", action="store_true", help="also run (c) and (d) with compress_lossy=true")
    ap.add_argument("--live", action="store_true",
                    help="(c): Claude Code itself runs the task, rather than its captured session sent again")
    args = ap.parse_args()
    sessions = [dataclasses.replace(s, run=claude_code, needs=clients.CLAUDE) if s.key == "c" and args.live else s
                for s in SESSIONS]
    work = Path(tempfile.mkdtemp(prefix="bench-compress-"))
    results: list[tuple[Session, str, Run, Run]] = []
    for session in sessions:
        if session.key not in args.sessions:
            continue
        if session.needs is not None and not session.needs.exists():
            print(f"({session.key}) {session.name}: skipped, there is no {session.needs} "
                  "(scripts/setup.sh installs the clients, scripts/capture_flows.py captures the flows)")
            continue
        direct = play(session, work / session.key / "direct", proxied=False)
        proxy = play(session, work / session.key / "proxy", proxied=True)
        results.append((session, "defaults", direct, proxy))
        print(f"({session.key}) {session.name}: {pct(proxy.usd, direct.usd)} of direct "
              f"({direct.seconds:.0f} s direct, {proxy.seconds:.0f} s proxy)", flush=True)
        if args.lossy and session.key in "cd":
            lossy = play(session, work / session.key / "lossy", proxied=True, sets={"compress_lossy": "true"})
            results.append((session, "lossy", direct, lossy))
            print(f"({session.key}) {session.name} lossy: {pct(lossy.usd, direct.usd)} of direct", flush=True)
    print()
    print(f"{'session':<40}{'direct $':>10}{'proxy $':>10}{'ratio':>8}{'target':>8}{'turns':>8}  tool-output lines")
    failed = False
    for session, mode, direct, proxy in results:
        ratio = proxy.usd / direct.usd if direct.usd else 0.0
        target = session.target if mode == "defaults" else 1.0
        ok = ratio <= target and proxy.turns == direct.turns and (mode == "lossy" or not proxy.missing)
        failed |= not ok
        lines = (f"{proxy.lines - len(proxy.missing):,}/{proxy.lines:,} reached upstream")
        name = f"({session.key}) {session.name}" + (" [lossy]" if mode == "lossy" else "")
        print(f"{name:<40}{direct.usd:>10.4f}{proxy.usd:>10.4f}{pct(proxy.usd, direct.usd):>8}"
              f"{'<=' + format(target, '.0%'):>8}{f'{proxy.turns}/{direct.turns}':>8}  {lines}"
              f"{'' if ok else '  <-- FAILS'}")
    print()
    print("billed tokens: uncached input / cache write / cache read / output (requests)")
    for session, mode, direct, proxy in results:
        name = f"({session.key}) {session.name}" + (" [lossy]" if mode == "lossy" else "")
        for label, r in (("direct", direct), ("proxy", proxy)):
            if label == "direct" and mode == "lossy":
                continue
            print(f"{name if label == 'direct' or mode == 'lossy' else '':<40}{label:>7}  {r.uncached:>9,} / "
                  f"{r.write:>9,} / {r.read:>9,} / {r.output:>7,}  ({r.requests})")
    for session, mode, _, proxy in results:
        if proxy.missing and mode == "defaults":
            print(f"\n({session.key}) lines that did not reach upstream:")
            for line in proxy.missing[:10]:
                print("   ", line[:120])
    print(f"\nwork files in {work}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
