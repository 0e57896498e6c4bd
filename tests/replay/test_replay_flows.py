"""Captured flows in mitmproxy's own format, read back through the whole bundle by
a real `mitmdump -n -r`: every recorded usage becomes an exact event row."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mitmproxy import io

from tests.conftest import LAUNCHER
from tests.replay.traffic import expected_usage

FLOWS = Path(__file__).parent.parent / "flows" / "providers.flow"

pytestmark = pytest.mark.integration


def test_mitmdump_replays_captured_flows_through_the_bundle(tmp_path):
    store = tmp_path / "replay.db"
    with open(FLOWS, "rb") as f:
        flows = list(io.FlowReader(f).stream())
    proc = subprocess.run(
        [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()", "-n", "-r", str(FLOWS),
         "-s", str(LAUNCHER), "--set", f"store_path={store}", "--set", f"confdir={tmp_path / 'conf'}",
         "--set", "flow_detail=0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    conn = sqlite3.connect(store)
    conn.row_factory = sqlite3.Row
    rows = {r["exchange_id"]: dict(r) for r in conn.execute("SELECT * FROM requests")}
    assert len(rows) == len(flows) == 12
    checked = 0
    for flow in flows:
        row = rows[flow.id]
        interaction = {"response": {"body": {"string": flow.response.get_text()}}}
        if not flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            interaction = {"response": {"parsed_body": flow.response.json()}}
        expected = expected_usage(row["api"], interaction)
        assert expected is not None
        for key, value in expected.items():
            assert row[key] == value, (row["api"], key)
        assert not row["estimated"]
        checked += 1
    assert checked == 12
    apis = {r["api"] for r in rows.values()}
    assert apis == {"anthropic.messages", "anthropic.count_tokens", "openai.chat", "openai.responses",
                    "gemini.generate"}
    assert sum(r["cache_read_tokens"] for r in rows.values()) > 0
