"""`tokenaddons replay` on captured sessions of real clients (tests/flows, made by
scripts/capture_flows.py): the bundle runs again over each captured request,
answered from its captured answer, and the report sets what these settings
would have done beside what was billed."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from mitmproxy import io

from tokenaddons.exchange import METADATA_KEY
from tokenaddons.ui.cli import main
from tokenaddons.whatif import TOKENS

FLOWS = Path(__file__).parent.parent / "flows"
CLAUDE_CODE, CODEX = FLOWS / "claude_code.flow", FLOWS / "codex.flow"

pytestmark = pytest.mark.integration


def replay(*args: str) -> dict:
    out = CliRunner().invoke(main, ["replay", *args, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def summaries(path: Path) -> dict[str, dict]:
    with open(path, "rb") as f:
        return {flow.id: flow.metadata[METADATA_KEY] for flow in io.FlowReader(f).stream()}


@pytest.mark.parametrize("path", [CLAUDE_CODE, CODEX], ids=["claude_code", "codex"])
def test_replayed_with_the_captured_settings_it_bills_what_was_billed(path):
    data = replay(str(path))
    billed = summaries(path)
    assert data["exchanges"] == len(billed) and not data["skipped"]
    was, now = data["captured"], data["replayed"]
    assert was["cost_usd"] == pytest.approx(sum(s["cost_usd"] or 0 for s in billed.values()))
    assert was["cost_usd"] > 0.01
    for key in ("upstream", *TOKENS):
        assert now[key] == was[key], key
    assert now["cost_usd"] == pytest.approx(was["cost_usd"])
    for exchange in data["by_exchange"]:  # exchange by exchange, under the captured ids
        assert exchange["would_bill_usd"] == pytest.approx(billed[exchange["id"]]["cost_usd"] or 0)


def test_the_report_prints_side_by_side():
    out = CliRunner().invoke(main, ["replay", str(CLAUDE_CODE), str(CODEX)], terminal_width=120)
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert "Replay of 5 captured exchange(s)" in lines[0]
    header = next(line for line in lines if "as captured" in line)
    assert "with these settings" in header and "difference" in header
    assert any(line.split("│")[1].strip() == "billed" for line in lines if line.count("│") > 3)


def test_a_budget_would_have_refused_the_session(tmp_path):
    data = replay(str(CLAUDE_CODE), "--set", "budget_daily_usd=0.05")
    now = data["replayed"]
    agent_turns = [e for e in data["by_exchange"] if e["path"] == "/v1/messages"]
    assert now["refused"]["budget"]["requests"] == len(agent_turns) == 2
    assert now["refused"]["budget"]["why"] == {"global daily": 2}
    assert now["refused"]["budget"]["billed_usd"] == pytest.approx(data["captured"]["cost_usd"])
    assert now["cost_usd"] == 0 and now["upstream"] == 1  # Claude Code's HEAD / only


def test_prices_from_a_settings_file_and_a_store_of_its_own(tmp_path):
    settings = tmp_path / "prices.toml"
    settings.write_text('[prices."openai/gpt-5"]\ninput_mtok = 10\noutput_mtok = 100\ncache_read_mtok = 1\n')
    store = tmp_path / "replay.db"
    data = replay(str(CODEX), "--settings", str(settings), "--store", str(store))
    now = data["replayed"]
    uncached = now["input_tokens"] - now["cache_read_tokens"]
    expected = (uncached * 10 + now["cache_read_tokens"] * 1 + now["output_tokens"] * 100) / 1e6
    assert now["cost_usd"] == pytest.approx(expected)
    assert now["cost_usd"] > 5 * data["captured"]["cost_usd"]
    conn = sqlite3.connect(store)  # the replay's own rows, under the captured exchanges' ids
    ids = {r[0] for r in conn.execute("SELECT exchange_id FROM requests")}
    conn.close()
    assert ids == set(summaries(CODEX))
    out = CliRunner().invoke(main, ["replay", str(CODEX), "--store", str(store)])
    assert out.exit_code != 0 and "exists" in out.output


def test_a_misspelt_setting_or_an_unreadable_file_is_a_clear_error(tmp_path):
    out = CliRunner().invoke(main, ["replay", str(CODEX), "--set", "budget_dialy_usd=5"])
    assert out.exit_code != 0 and "unknown option(s) budget_dialy_usd" in out.output
    bad = tmp_path / "notes.txt"
    bad.write_text("not a capture")
    out = CliRunner().invoke(main, ["replay", str(bad)])
    assert out.exit_code != 0 and f"cannot read {bad}" in out.output


def test_a_route_to_a_cheaper_model_is_priced_at_that_model(tmp_path):
    from tokenaddons.engines import pricing
    from tokenaddons.engines.usage import Usage

    settings = tmp_path / "route.toml"
    settings.write_text('[aliases]\n"claude-sonnet-4-5" = "anthropic/claude-haiku-4-5"\n')
    data = replay(str(CLAUDE_CODE), "--settings", str(settings))
    billed = summaries(CLAUDE_CODE)
    for exchange in data["by_exchange"]:
        usage = billed[exchange["id"]]["usage"]
        if exchange["path"] != "/v1/messages":
            continue
        # the captured answer stands in for the model the alias chose, billed at its prices
        assert "route:alias" in exchange["did"] and exchange["answered_by"] is None
        assert exchange["would_bill_usd"] == pytest.approx(pricing.price("anthropic", "claude-haiku-4-5",
                                                                          Usage(**usage)))
    saved = data["replayed"]["saved"]["routing"]
    assert saved["requests"] == 2 and saved["usd"] == pytest.approx(data["captured"]["cost_usd"]
                                                                    - data["replayed"]["cost_usd"])
    assert data["replayed"]["cost_usd"] < data["captured"]["cost_usd"] / 2
