"""End to end: in a real mitmdump the client has its answer before the
accounting parts run (`account_after_send`), and waits for them with it off.

A part of the bundle that accounts (`after_send = True`) waits for a marker
file that only the client writes, once it holds its answer: it sees the marker
only if the answer left first. No timing is compared."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tokenaddons.process import Mitmdump

pytestmark = pytest.mark.integration

LAUNCHER = '''
import os
import time

from mitmproxy import ctx

from tokenaddons.bundle import addons, loaded


class Held:
    """Accounts last: waits for the client's marker, and says whether it came."""

    after_send = True

    def load(self, loader):
        loader.add_option("held_marker", str, "", "written by the client once it holds its answer")
        loader.add_option("held_result", str, "", "where this part says what it saw")
        loader.add_option("held_wait_ms", int, 10_000, "how long it waits for the marker")

    def response(self, flow):
        deadline = time.monotonic() + ctx.options.held_wait_ms / 1000
        while not os.path.exists(ctx.options.held_marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = "answered first" if os.path.exists(ctx.options.held_marker) else "waited for"
        with open(ctx.options.held_result, "a") as f:
            f.write(seen + "\\n")


addons = loaded(addons() + [Held()])
'''

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


def held_proxy(sim, tmp_path: Path, **sets) -> tuple[Mitmdump, Path, Path]:
    launcher = tmp_path / "held.py"
    launcher.write_text(LAUNCHER)
    marker, result = tmp_path / "marker", tmp_path / "result"
    proxy = Mitmdump(sim.url, tmp_path / "proxy", launcher=launcher,
                     sets={"held_marker": marker, "held_result": result, **sets})
    return proxy, marker, result


def said(result: Path) -> str:
    deadline = time.monotonic() + 20
    while not result.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return result.read_text().strip()


def test_the_client_has_its_answer_before_the_accounting_runs(sim, tmp_path):
    proxy, marker, result = held_proxy(sim, tmp_path)
    with proxy:
        answer = httpx.post(f"{proxy.url}/v1/messages", json=BODY, headers=HEADERS, timeout=30)
        assert answer.status_code == 200 and answer.headers["x-tokenaddons-cache"] == "MISS"
        marker.write_text("received")
        assert said(result) == "answered first"
    # and the exchange was metered all the same (written as the proxy stopped, at the latest)
    conn = sqlite3.connect(proxy.store)
    ((status, output_tokens, cost),) = conn.execute("SELECT status, output_tokens, cost_usd FROM requests")
    conn.close()
    assert status == 200 and output_tokens == json.loads(answer.content)["usage"]["output_tokens"] and cost > 0


def test_with_account_after_send_off_the_client_waits_for_the_accounting(sim, tmp_path):
    proxy, marker, result = held_proxy(sim, tmp_path, account_after_send="false", held_wait_ms=1000)
    with proxy:
        answer = httpx.post(f"{proxy.url}/v1/messages", json=BODY, headers=HEADERS, timeout=30)
        assert answer.status_code == 200
        marker.write_text("received")
        assert said(result) == "waited for"
