"""The stats view and the report share their queries; frames are rendered to a
recording console and read back."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from rich.console import Console

from tokenaddons.store import EventStore, open_for_reading
from tokenaddons.ui.cli import main
from tokenaddons.ui.views import StatsView, sparkline

NOW = time.time()


@pytest.fixture
def store(tmp_path):
    events = EventStore(tmp_path / "events.db")
    events.start()
    rows = [
        ("anthropic", "claude-sonnet-4-5", "checkout", 2000, 1500, 300, 80, 0.0123, None, 200, "MISS", None),
        ("anthropic", "claude-sonnet-4-5", "checkout", 0, 0, 0, 0, 0.0, None, 200, "HIT", "cache"),
        ("openai", "gpt-4o-mini", "support", 1200, 1024, 0, 40, 0.0004, None, 200, "MISS", None),
        ("openai", "gpt-4o-mini", None, 900, 0, 0, 0, 0.0, "rate_limit_error", 429, None, "budget"),
        ("gemini", "gemini-2.5-flash", "research", 50, 0, 0, 60, 0.0002, None, 200, None, None),
    ]
    for i, (prov, model, project, inp, rd, wr, out, cost, err, status, cache, by) in enumerate(rows):
        events.put_request({"exchange_id": f"x{i}", "ts": NOW - 60 * (len(rows) - i), "provider": prov,
                            "api": "x", "model": model, "project": project, "input_tokens": inp,
                            "cache_read_tokens": rd, "cache_write_tokens": wr, "output_tokens": out,
                            "cost_usd": cost, "error_type": err, "status": status, "cache_status": cache,
                            "answered_by": by, "latency_ms": 100.0 * (i + 1), "ttfb_ms": 10.0 * (i + 1),
                            "prompt_cache_saved_usd": 0.004 if rd else 0.0})
    events.put_decision({"exchange_id": "x1", "ts": NOW - 240, "addon": "cache", "action": "hit",
                         "tokens_saved": 2080, "usd_saved": 0.0123, "project": "checkout",
                         "provider": "anthropic", "model": "claude-sonnet-4-5"})
    events.put_decision({"exchange_id": "x0", "ts": NOW - 300, "addon": "scrub", "action": "pseudonymize",
                         "detail": json.dumps({"counts": {"EMAIL_ADDRESS": 2}}), "project": "checkout",
                         "provider": "anthropic", "model": "claude-sonnet-4-5"})
    events.flush()
    yield events.path
    events.close()


def render(path, width, window="h") -> str:
    console = Console(record=True, width=width, force_terminal=True, color_system="truecolor")
    view = StatsView(path, window)
    with open_for_reading(path) as conn:
        console.print(view.frame(conn, NOW, width))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 160])
def test_frame_shows_totals_models_projects_and_recent(store, width):
    text = render(store, width)
    assert all(len(line) <= width for line in text.splitlines())
    for model in ("claude-sonnet-4-5", "gpt-4o-mini", "gemini-2.5-flash"):
        assert model in text
    for project in ("checkout", "support", "research"):
        assert project in text
    assert "$0.0129" in text  # spent: 0.0123 + 0.0004 + 0.0002
    assert "cache hits $0.0123" in text and "provider caching $0.0080" in text
    assert "cache hit rate  20.0%" in text
    assert "HIT" in text and "429" in text
    assert "scrubbed 2 email" in text
    if width >= 110:
        assert "anthropic" in text and "ttft p50" in text


def test_colours_carry_meaning(store):
    console = Console(record=True, width=160, force_terminal=True, color_system="truecolor")
    with open_for_reading(store) as conn:
        console.print(StatsView(store, "h").frame(conn, NOW, 160))
    html = console.export_html(inline_styles=True)
    assert "color: #800000" in html or "color: #ff0000" in html  # errors and refusals in red
    assert "color: #008000" in html or "color: #00ff00" in html  # savings in green


def test_stats_once_equals_report_json(store):
    runner = CliRunner()
    report = json.loads(runner.invoke(main, ["report", "--store", str(store), "--json"]).output)
    out = runner.invoke(main, ["stats", "--once", "--store", str(store), "--window", "h", "--width", "120"])
    assert out.exit_code == 0, out.output
    for m in report["models"]:
        assert m["model"] in out.output
    assert report["requests"] == 5 and f"requests        {report['requests']}" in out.output
    assert f"${report['cost_usd']:.4f}" in out.output


def test_budget_gauges_show_only_when_budgets_exist(store, tmp_path):
    assert "Budgets" not in render(store, 120)
    conn = __import__("tokenaddons.store").store.connect(store)
    conn.execute("CREATE TABLE IF NOT EXISTS budget_limits (scope TEXT, window TEXT, limit_usd REAL, timezone TEXT)")
    conn.execute("INSERT INTO budget_limits VALUES ('global', 'daily', 0.02, 'UTC')")
    conn.commit()
    text = render(store, 120)
    assert "Budgets" in text and "$0.02" in text


def test_sparkline():
    assert sparkline([0, 1, 2, 4]) == " ▂▄█"
    assert sparkline([0, 0]) == "  "


def test_time_to_reset_reads_at_a_glance():
    from tokenaddons.ui.views import fmt_duration

    assert [fmt_duration(s) for s in (5 * 86400 + 7 * 3600 + 59, 7 * 3600 + 33 * 60, 12 * 60 + 5, 59)] == [
        "5d07h", "7h33m", "12m", "0m"]


def test_savings_by_source_count_each_dollar_once(tmp_path):
    """Hint decisions are credited with what the provider's cache saved on their
    requests, which the requests' prompt_cache_saved_usd already holds."""
    events = EventStore(tmp_path / "events.db")
    events.start()
    rows = [("own", 0.010, None), ("hinted", 0.030, 0.030), ("plain", 0.0, None)]
    for i, (name, cache_saved, hinted) in enumerate(rows):
        events.put_request({"exchange_id": name, "ts": NOW - 100 + i, "provider": "anthropic", "api": "x",
                            "model": "claude-sonnet-4-5", "project": "agent", "input_tokens": 5000,
                            "cost_usd": 0.01, "status": 200, "prompt_cache_saved_usd": cache_saved})
        common = {"exchange_id": name, "ts": NOW - 100 + i, "project": "agent", "provider": "anthropic",
                  "model": "claude-sonnet-4-5", "addon": "compress"}
        if hinted:
            events.put_decision({**common, "action": "hints", "usd_saved": hinted,
                                 "detail": json.dumps({"breakpoints": ["prefix", "newest turn"]})})
        events.put_decision({**common, "action": "terminal", "tokens_saved": 400, "usd_saved": 0.0012})
    events.put_decision({"exchange_id": "plain", "ts": NOW - 98, "addon": "compress", "action": "cap",
                         "tokens_saved": 3000, "usd_saved": 0.009, "project": "agent", "provider": "anthropic",
                         "model": "claude-sonnet-4-5"})
    events.flush()
    events.close()
    out = CliRunner().invoke(main, ["report", "--store", str(tmp_path / "events.db"), "--json"])
    report = json.loads(out.output)
    by = report["savings_by_source"]
    assert list(by) == ["provider caching", "cache hints", "compression", "lossy compression"]
    assert by["provider caching"]["usd_saved"] == pytest.approx(0.010)  # the client's own breakpoints
    assert by["cache hints"]["usd_saved"] == pytest.approx(0.030)
    assert by["compression"] == {"tokens_saved": 1200, "usd_saved": pytest.approx(0.0036), "count": 3}
    assert by["lossy compression"]["tokens_saved"] == 3000
    assert report["savings"]["compress"]["usd_saved"] == pytest.approx(0.0126)  # hints are not in it twice
    text = CliRunner().invoke(main, ["report", "--store", str(tmp_path / "events.db")]).output
    assert "Saved, by source" in text and "cache hints" in text and "$0.0526" in text  # 0.01+0.03+0.0036+0.009
    frame = render(tmp_path / "events.db", 160)
    assert "$0.0526  provider caching $0.0100  cache hints $0.0300  compression $0.0036" in frame
    assert "hints: 2 breakpoints; compressed -400 tok" in frame and "compressed -3400 tok" in frame
    by_model = [line for line in frame.splitlines() if "claude-sonnet-4-5" in line and "$0.0300" in line]
    assert by_model and "$0.0526" in by_model[0]  # the model's saved column: every source, once


def test_team_mode_and_a_redis_outage_show(store):
    from tokenaddons.store import health

    health.publish(store, {"state": "ok", "redis": "redis://:***@db:6379/0"}, kind="team")
    try:
        text = render(store, 160)
        assert "shares its cache, budgets and rate limits through redis://:***@db:6379/0" in " ".join(text.split())
        health.publish(store, {"state": "down", "redis": "redis://:***@db:6379/0", "since": NOW - 30,
                               "reason": "ConnectionError: Connection refused", "fail_open": False}, kind="team")
        text = " ".join(render(store, 160).split())
        assert "cannot reach redis://:***@db:6379/0" in text and "Connection refused" in text
        assert "refuses requests under a budget until Redis is back" in text
        report = CliRunner().invoke(main, ["report", "--store", str(store), "--json"])
        assert "cannot reach redis" in json.loads(report.output)["store_warnings"][0]
    finally:
        health.publish(store, None, kind="team")
    assert "redis" not in render(store, 160).lower()
