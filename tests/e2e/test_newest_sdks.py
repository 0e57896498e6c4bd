"""The newest anthropic and openai SDKs (from a separate venv: they need h11>=0.16,
which mitmproxy 11 cannot share an environment with) through a real mitmdump with
the bundle: JSON and streams for Messages, Chat and Responses, metered exactly."""
from __future__ import annotations

import json
import subprocess

from tests.conftest import ROOT, needs_client

PYTHON = ROOT / ".venv-newest" / "bin" / "python"
CLIENT = ROOT / "tests" / "e2e" / "clients" / "newest_sdks.py"

pytestmark = needs_client(PYTHON, "the newest SDKs (.venv-newest)")


def test_the_newest_sdks_through_the_proxy(make_proxy, sim):
    proxy = make_proxy(sim.url)
    run = subprocess.run([str(PYTHON), "-W", "ignore", str(CLIENT), proxy.url], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    rows = proxy.rows(7)
    by = [(r["api"], r["stream"]) for r in rows]
    assert by == [("anthropic.messages", 0), ("anthropic.messages", 1), ("openai.chat", 0), ("openai.chat", 1),
                  ("openai.responses", 0), ("openai.responses", 1), ("anthropic.messages", 0)]
    for row, key in zip(rows, ("anthropic_json", "anthropic_stream", "chat_json", None, "responses_json",
                               "responses_stream")):
        assert row["status"] == 200 and row["complete"] == 1 and not row["estimated"] and row["cost_usd"] > 0
        if key:
            assert [row["input_tokens"], row["output_tokens"]] == got[key], (key, got["versions"])
    assert got["chat_stream_saw_usage"] is False  # usage was asked for upstream, and hidden from this client
    assert rows[3]["output_tokens"] > 0
    assert got["rate_limit"] == 429 and rows[6]["status"] == 429
