"""The event store through a real mitmdump: nothing lost, nothing readable by others, loud when behind."""
from __future__ import annotations

import concurrent.futures
import json
import signal
import stat
import subprocess
import sys
import time

import anthropic
import httpx
import pytest

from tests.conftest import LAUNCHER
from tokenaddons.process import free_port, wait_port

pytestmark = pytest.mark.integration


def ask(url: str, i: int, model="claude-sonnet-4-5", headers=None) -> int:
    body = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": f"question {i}"}]}
    return httpx.post(f"{url}/v1/messages", json=body, headers={"x-api-key": "k", **(headers or {})},
                      timeout=30).status_code


def test_e2e_twenty_concurrent_requests_one_with_a_model_that_is_a_list_all_metered(make_proxy, sim):
    proxy = make_proxy(sim.url)
    models = ["claude-sonnet-4-5"] * 19 + [["x"]]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda im: ask(proxy.url, im[0], im[1]), enumerate(models)))
    rows = proxy.rows(20)  # at least 19 must be written; a value SQLite cannot bind costs no row at all
    assert statuses == [200] * 19 + [400]  # refused by the provider, as a real one does
    odd = [r for r in rows if r["requested_model"] == '["x"]']
    assert len(odd) == 1 and odd[0]["status"] == 400 and odd[0]["model"] == '["x"]'
    assert all(r["cost_usd"] > 0 for r in rows if r is not odd[0])
    assert "Traceback" not in proxy.log.read_text()


def test_e2e_an_error_type_or_served_model_that_is_an_object_is_metered(make_proxy, sim):
    proxy = make_proxy(sim.url)
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.InternalServerError):
        c.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "a"}],
                          extra_headers={"x-sim-fault": "500",
                                         "x-sim-patch": json.dumps({"error": {"type": {"code": 7}}})})
    c.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "b"}],
                      extra_headers={"x-sim-patch": json.dumps({"model": {"name": "odd"}})})
    failed, odd = proxy.rows(2)
    assert failed["status"] == 500 and failed["error_type"] == '{"code": 7}'
    assert odd["model"] == '{"name": "odd"}' and odd["output_tokens"] > 0 and odd["complete"] == 1
    assert "unhashable" not in proxy.log.read_text()


def test_e2e_the_store_and_its_wal_files_are_readable_by_their_owner_only(make_proxy, sim):
    proxy = make_proxy(sim.url)
    assert ask(proxy.url, 1) == 200
    proxy.rows(1)
    made = {p.name: stat.S_IMODE(p.stat().st_mode) for p in proxy.store.parent.iterdir()
            if p.name.startswith(proxy.store.name)}
    assert made == {"events.db": 0o600, "events.db-wal": 0o600, "events.db-shm": 0o600,
                    "events.db.scrub-key": 0o600}, made


def test_e2e_listening_beyond_loopback_with_no_proxyauth_is_warned_about(make_proxy, sim, tmp_path):
    port = free_port()
    log = tmp_path / "exposed.log"
    # mitmproxy's own default: every interface (the Proxy fixture always passes --listen-host 127.0.0.1)
    proc = subprocess.Popen([sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()",
                             "--mode", f"reverse:{sim.url}", "-p", str(port), "-s", str(LAUNCHER),
                             "--set", f"store_path={tmp_path / 'exposed.db'}", "--set", f"confdir={tmp_path}"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
        assert ask(f"http://127.0.0.1:{port}", 1) == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert "listens on every interface with no proxyauth" in log.read_text()
    local = make_proxy(sim.url)
    assert ask(local.url, 2) == 200
    assert "no proxyauth" not in local.log.read_text()


def test_e2e_a_writer_held_up_by_a_lock_is_reported_behind_then_loses_nothing(make_proxy, sim):
    from click.testing import CliRunner

    from tokenaddons.store import connect
    from tokenaddons.ui.cli import main

    proxy = make_proxy(sim.url, {"store_stall_s": "1"})
    assert ask(proxy.url, 0) == 200
    proxy.rows(1)
    blocker = connect(proxy.store)
    blocker.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        assert [ask(proxy.url, i) for i in range(1, 6)] == [200] * 5  # answers never wait for the store
        deadline = time.monotonic() + 10
        while "stuck" not in proxy.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "the writer has been stuck in one batch" in proxy.log.read_text()
        report = CliRunner().invoke(main, ["report", "--store", str(proxy.store)])
        assert "event store is behind" in report.output and "events are queued" in report.output
    finally:
        blocker.rollback()
        blocker.close()
    assert len(proxy.rows(6)) == 6  # held up, not lost
    deadline = time.monotonic() + 10
    while "moving again" not in proxy.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "behind" not in CliRunner().invoke(main, ["report", "--store", str(proxy.store)]).output
