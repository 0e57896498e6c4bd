"""`tokenaddons replay` on captured sessions of real clients (tests/flows, made by
scripts/capture_flows.py): the bundle runs again over each captured request,
answered from its captured answer, and the report sets what these settings
would have done beside what was billed."""
from __future__ import annotations

import io as io_text
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from mitmproxy import io
from rich.console import Console

from tokenaddons.exchange import METADATA_KEY
from tokenaddons.ui.cli import main
from tokenaddons.ui.views import render_whatif
from tokenaddons.whatif import TOKENS

FLOWS = Path(__file__).parent.parent / "flows"
CLAUDE_CODE, CODEX = FLOWS / "claude_code.flow", FLOWS / "codex.flow"

pytestmark = pytest.mark.integration

AS_CAPTURED = ("--set", "scrub_enabled=false", "--set", "compress=false", "--set", "cache_hints=false")


def replay(*args: str) -> dict:
    out = CliRunner().invoke(main, ["replay", *args, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def summaries(path: Path) -> dict[str, dict]:
    with open(path, "rb") as f:
        return {flow.id: flow.metadata[METADATA_KEY] for flow in io.FlowReader(f).stream()}


@pytest.mark.parametrize("path", [CLAUDE_CODE, CODEX], ids=["claude_code", "codex"])
def test_replayed_with_the_captured_settings_it_bills_what_was_billed(path):
    # captured with scrub, compress and hints off (scripts/capture_flows.py)
    data = replay(str(path), *AS_CAPTURED)
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
    # compression off saves nothing
    assert all(saved == {"requests": 0, "tokens": 0, "usd": 0.0} for saved in now["saved"].values())
    assert not any(d.startswith("compress:") for e in data["by_exchange"] for d in e["did"])


def billed_input(run) -> tuple[int, int, int]:
    """A benchmark run's billed input tokens: uncached, cache writes, cache reads."""
    return run.uncached, run.write, run.read


def replayed_input(side: dict) -> tuple[int, int, int]:
    written, read = side["cache_write_tokens"], side["cache_read_tokens"]
    return side["input_tokens"] - written - read, written, read


@pytest.mark.parametrize("lossy", [False, True], ids=["lossless", "lossy"])
def test_compression_saves_what_the_compress_benchmark_measures_on_the_same_session(tmp_path, lossy):
    """The replay's what-if beside benchmarks/bench_compress.py's Claude Code
    session (c), which sends the requests of this same capture to the simulated
    provider (real prompt-cache rules) direct and through the bundle, and bills
    what the provider reported."""
    from benchmarks import bench_compress as bench

    session = next(s for s in bench.SESSIONS if s.key == "c")
    on = {"compress": "true", "cache_hints": "true", "compress_lossy": str(lossy).lower()}
    direct = bench.play(session, tmp_path / "direct", proxied=False)
    proxy = bench.play(session, tmp_path / "proxy", proxied=True, sets=on)
    sets = [arg for k, v in {**bench.PROXY_SETS, **on}.items() for arg in ("--set", f"{k}={v}")]
    data = replay(str(CLAUDE_CODE), *sets)
    was, now, saved = data["captured"], data["replayed"], data["replayed"]["saved"]

    # as captured is what the benchmark bills direct: the same requests, the same provider rules
    assert replayed_input(was) == billed_input(direct) and was["output_tokens"] == direct.output
    assert was["cost_usd"] == pytest.approx(direct.usd, rel=1e-9)

    # real savings, by source: compression of tool output, every turn of the agent
    compress = saved["compress"]
    agent_turns = [e for e in data["by_exchange"] if e["path"] == "/v1/messages"]
    # every turn with tool output: the first has none, and the second only a file
    # read, which only the lossy cap touches (an agent edits files by exact text)
    assert compress["requests"] == len(agent_turns) - (1 if lossy else 2) == (7 if lossy else 6)
    assert compress["tokens"] > 10_000 and compress["usd"] > 0.02
    assert compress["usd"] > 0.07 * was["cost_usd"]
    # Claude Code places its own breakpoints: hints add none, and neither the
    # replay nor the benchmark sees them change a thing
    assert saved["hints"] == {"requests": 0, "tokens": 0, "usd": 0.0}
    assert saved["cache"]["requests"] == saved["routing"]["requests"] == 0
    assert now["cost_usd"] == pytest.approx(was["cost_usd"] - compress["usd"])

    # The replay prices each token compress removed as it would have been billed
    # (a cache write the turn it first appears, a cache read on every later turn);
    # the benchmark bills what the provider reported for the compressed requests.
    # They agree to within 0.5% of the tokens and 1% of the dollars. Why they may
    # differ at all: the provider counts a whole content block, compress the text
    # it changed (a token merged across the boundary). Output is left out of the
    # dollars: the simulated model's last answer quotes the tool output it was
    # sent, shorter once compressed; a replay's answers are the captured ones.
    bench_tokens = [d - p for d, p in zip(billed_input(direct), billed_input(proxy))]
    assert sum(bench_tokens) == pytest.approx(compress["tokens"], rel=0.005)
    assert [was[k] - now[k] for k in ("cache_write_tokens", "cache_read_tokens")] == pytest.approx(
        bench_tokens[1:], rel=0.005)
    bench_usd = (direct.usd - direct.output_usd) - (proxy.usd - proxy.output_usd)
    assert compress["usd"] == pytest.approx(bench_usd, rel=0.01)
    assert proxy.turns == direct.turns == len(agent_turns)
    assert bool(proxy.missing) is lossy  # lossless: every line of every tool output reached the provider


def test_the_report_prints_side_by_side():
    out = CliRunner().invoke(main, ["replay", str(CLAUDE_CODE), str(CODEX)], env={"COLUMNS": "120"})
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert "Replay of 12 captured exchange(s)" in lines[0]
    header = next(line for line in lines if "as captured" in line)
    assert "with these settings" in header and "difference" in header
    cells = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
             for line in lines if line.count("│") > 3}
    assert cells["billed"][2].startswith("-$0.02")  # compress is on by default; the capture went without
    assert cells["saved by compress"][:2] == ["$0.0000 (0)", "$0.0211 (6)"]
    assert "capture was made with compression on" not in out.stdout


def test_a_budget_would_have_refused_the_session(tmp_path):
    data = replay(str(CLAUDE_CODE), "--set", "budget_daily_usd=0.05")
    now = data["replayed"]
    # every request to the API: the agent's 8 turns and its token count
    api = [e for e in data["by_exchange"] if e["path"].startswith("/v1/messages")]
    assert now["refused"]["budget"]["requests"] == len(api) == 9
    assert now["refused"]["budget"]["why"] == {"global daily": 9}
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
    data = replay(str(CLAUDE_CODE), "--settings", str(settings), *AS_CAPTURED)
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
    assert saved["requests"] == 8 and saved["usd"] == pytest.approx(data["captured"]["cost_usd"]
                                                                    - data["replayed"]["cost_usd"])
    assert data["replayed"]["cost_usd"] < data["captured"]["cost_usd"] / 2


def rendered(data: dict) -> str:
    """The report as `tokenaddons replay` prints it."""
    console = Console(file=io_text.StringIO(), width=120)
    render_whatif(data, console)
    return console.file.getvalue()


def capture(tmp_path: Path, sets: dict, send) -> Path:
    """A capture made here: `send(url)` through a bundle with `sets`, to the simulator."""
    from tokenaddons.process import Mitmdump
    from tokenaddons.sim import Simulator

    out = tmp_path / "capture.flow"
    with Simulator() as sim, Mitmdump(sim.url, tmp_path / "proxy", {**sets, "capture_path": out}) as proxy:
        send(proxy.url)
    return out


def test_a_capture_made_with_compression_on_has_nothing_left_to_compress(tmp_path):
    from tokenaddons.test.clients import resend

    compressed = capture(tmp_path, {"scrub_enabled": "false"}, lambda url: resend(CLAUDE_CODE, url))
    data = replay(str(compressed), "--set", "scrub_enabled=false")  # compress on, as captured
    was, now = data["captured"], data["replayed"]
    assert was["saved"]["compress"]["requests"] == 6 and was["saved"]["compress"]["usd"] > 0.02
    # what went upstream is compressed already, and compresses to the same bytes
    assert now["saved"]["compress"]["requests"] == 0 and now["cost_usd"] == pytest.approx(was["cost_usd"])
    printed = rendered(data)
    assert "The capture was made with compression on: 6 request(s) went upstream compressed" in printed
    assert "cannot put back what was removed" in printed


def test_hints_a_capture_went_without_are_shown_not_guessed(tmp_path):
    import anthropic

    system = "You review code and answer in one line. " * 400  # well over the minimum a breakpoint needs

    def send(url: str) -> None:
        client = anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0)
        for question in ("Is this fine?", "And now?"):
            client.messages.create(model="claude-sonnet-4-5", max_tokens=100, system=system,
                                   messages=[{"role": "user", "content": question}])

    plain = capture(tmp_path, {"cache_hints": "false"}, send)
    data = replay(str(plain))  # hints on
    was, now = data["captured"], data["replayed"]
    assert data["hinted_anew"] == 2
    assert all("compress:hints" in e["did"] for e in data["by_exchange"])
    # the captured answers read nothing from the provider's cache: what the hints
    # would have saved is not in them, and is neither guessed nor subtracted
    assert was["cache_read_tokens"] == now["cache_read_tokens"] == 0
    assert now["saved"]["hints"]["usd"] == 0 and now["cost_usd"] == pytest.approx(was["cost_usd"])
    assert "Cache hints would go on 2 request(s) the capture sent without them" in rendered(data)
