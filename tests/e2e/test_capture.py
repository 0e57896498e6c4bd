"""Flows saved by a real mitmdump with the bundle (`-w`), then read back by
`mitmdump -n -r`: every flow saves (JSON and streamed), carries the
exchange's summary in its metadata, and is metered exactly once on replay."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import anthropic
import httpx
import openai
import pytest
from mitmproxy import io

from tests.conftest import LAUNCHER

pytestmark = pytest.mark.integration

USAGE = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")


def traffic(proxy) -> int:
    """One of each API, JSON and streamed; returns how many requests were sent."""
    claude = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-test", max_retries=0)
    gpt = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0)
    msg = [{"role": "user", "content": "capture me"}]
    claude.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=msg)
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=msg) as s:
        s.get_final_message()
    gpt.chat.completions.create(model="gpt-4o-mini", messages=msg)
    list(gpt.chat.completions.create(model="gpt-4o-mini", messages=msg, stream=True))
    gpt.responses.create(model="gpt-4.1-mini", input="capture me")
    list(gpt.responses.create(model="gpt-4.1-mini", input="capture me", stream=True))
    gemini = {"contents": [{"role": "user", "parts": [{"text": "capture me"}]}]}
    for path in ("/v1beta/models/gemini-2.5-flash:generateContent",
                 "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"):
        httpx.post(proxy.url + path, json=gemini, headers={"x-goog-api-key": "g"}, timeout=10).raise_for_status()
    return 8


def read_rows(store) -> dict[str, dict]:
    conn = sqlite3.connect(store)
    conn.row_factory = sqlite3.Row
    rows = {r["exchange_id"]: dict(r) for r in conn.execute("SELECT * FROM requests")}
    conn.close()
    return rows


def test_saved_flows_carry_their_summary_and_replay_metered_once(make_proxy, sim, tmp_path):
    saved = tmp_path / "flows"
    proxy = make_proxy(sim.url, {"save_stream_file": str(saved)})
    sent = traffic(proxy)
    live = {r["exchange_id"]: r for r in proxy.rows(sent)}
    proxy.stop()
    log = proxy.log.read_text()
    assert "unserializable" not in log and "Exchange(" not in log

    with open(saved, "rb") as f:
        flows = list(io.FlowReader(f).stream())
    assert len(flows) == sent == len(live)
    for flow in flows:
        summary = flow.metadata["tokenaddons"]
        row = live[flow.id]
        assert summary["api"] == row["api"] and summary["stream"] == bool(row["stream"])
        assert summary["cost_usd"] == pytest.approx(row["cost_usd"])
        assert {k: summary["usage"][k] for k in USAGE} == {k: row[k] for k in USAGE}
        assert flow.response.content  # streamed answers are saved with their body too

    store = tmp_path / "replay.db"
    proc = subprocess.run(
        [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()", "-n", "-r", str(saved),
         "-s", str(LAUNCHER), "--set", f"store_path={store}", "--set", f"confdir={tmp_path / 'conf'}",
         "--set", "flow_detail=0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    replayed = read_rows(store)
    assert set(replayed) == set(live)  # each flow metered exactly once
    for exchange_id, row in replayed.items():
        assert {k: row[k] for k in USAGE} == {k: live[exchange_id][k] for k in USAGE}, row["api"]
        assert row["cost_usd"] == pytest.approx(live[exchange_id]["cost_usd"])
        assert not row["estimated"]
