"""`tokenaddons demo`: the proxy in front of the bundled simulator, a little
generated traffic through it, and the report of what was metered."""
from __future__ import annotations

import json
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console

from tokenaddons.process import Mitmdump
from tokenaddons.store import open_for_reading, queries

SYSTEM = ("You are a meticulous assistant for a logistics company. " * 160).strip()
QUESTIONS = [
    "Where is parcel 1 right now?", "Summarize yesterday's deliveries.",
    "Which route is fastest from Lyon to Turin?",
    # contact details: scrubbed before they leave, restored in the answer
    "Draft a note to the warehouse team; copy jane.roe@acme.io and call +1 415 555 0199 if it is late.",
]


def requests_for(i: int) -> tuple[str, dict, dict]:
    """The i-th demo request: (path, headers, body), cycling over the four APIs."""
    q = QUESTIONS[i % len(QUESTIONS)]
    project = ("checkout", "support", "research")[i % 3]
    headers = {"content-type": "application/json", "x-tokenaddons-project": project}
    stream = (i // 4) % 2 == 1
    kind = i % 4
    if kind == 0:
        return "/v1/messages", {**headers, "x-api-key": "demo", "anthropic-version": "2023-06-01"}, {
            "model": "claude-sonnet-4-5", "max_tokens": 300, "stream": stream,
            "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": q}]}
    if kind == 1:
        return "/v1/chat/completions", {**headers, "authorization": "Bearer demo"}, {
            "model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]}
    if kind == 2:
        return "/v1/responses", {**headers, "authorization": "Bearer demo"}, {
            "model": "gpt-4.1-mini", "stream": stream, "instructions": SYSTEM, "input": q}
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/gemini-2.5-flash:{method}", {**headers, "x-goog-api-key": "demo"}, {
        "contents": [{"role": "user", "parts": [{"text": q}]}]}


def send(base: str, path: str, headers: dict, body: dict) -> tuple[int, int]:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, len(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, len(e.read())


def run_demo(store: str | None, count: int, console: Console | None = None, pause: float = 0.0) -> dict:
    from tokenaddons.sim import Simulator
    from tokenaddons.ui.views import render_report

    console = console or Console()
    workdir = Path(tempfile.mkdtemp(prefix="tokenaddons-demo-"))
    store_path = Path(store).expanduser() if store else workdir / "events.db"
    with Simulator() as sim, Mitmdump(sim.url, workdir, {"store_path": store_path}) as proxy:
        console.print(f"[bold]simulator[/] {sim.url}   [bold]proxy[/] {proxy.url}   [bold]store[/] {store_path}")
        for i in range(count):
            path, headers, body = requests_for(i % 16)  # repeats after 16: cache hits
            status, size = send(proxy.url, path, headers, body)
            kind = "stream" if body.get("stream") or "stream" in path else "json"
            console.print(f"  {status} {kind:<6} {path.split('?')[0][:46]:<46} {size:>6} B", highlight=False)
            if pause:
                time.sleep(pause)
    with open_for_reading(store_path) as conn:
        data = queries.report(conn)
    render_report(data, console)
    console.print(f"\nJSON: tokenaddons report --store {store_path} --json")
    console.print(f"Live view: tokenaddons stats --store {store_path}")
    return data
