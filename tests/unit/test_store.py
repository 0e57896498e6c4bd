import sqlite3
import threading
import time

from tokenaddons.store import MIGRATIONS, EventStore, connect, migrate


def test_rows_are_written_by_one_background_thread(tmp_path):
    store = EventStore(tmp_path / "e.db")
    store.start()
    main = threading.get_ident()
    seen = []
    store.submit(lambda conn: seen.append(threading.get_ident()))
    for i in range(1000):
        store.put_request({"ts": float(i), "provider": "anthropic", "input_tokens": i})
    store.put_decision({"ts": 1.0, "addon": "cache", "action": "hit", "usd_saved": 0.5})
    store.flush()
    conn = connect(tmp_path / "e.db", readonly=True)
    assert conn.execute("SELECT COUNT(*), SUM(input_tokens) FROM requests").fetchone()[:] == (1000, 499500)
    assert conn.execute("SELECT addon, usd_saved FROM decisions").fetchone()[:] == ("cache", 0.5)
    assert seen and seen[0] != main
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_close_flushes_the_queue(tmp_path):
    store = EventStore(tmp_path / "e.db", flush_interval=5)
    store.start()
    for i in range(10):
        store.put_request({"ts": float(i)})
    store.close()
    assert sqlite3.connect(tmp_path / "e.db").execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 10


def test_rows_gather_for_the_interval_and_a_flush_writes_them_at_once(tmp_path):
    store = EventStore(tmp_path / "e.db", flush_interval=60)
    store.start()
    for i in range(10):
        store.put_request({"ts": float(i)})
    reader = connect(tmp_path / "e.db", readonly=True)
    assert reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0  # still gathering
    assert store.flush(timeout=10)  # not after the minute: the batch is written now
    assert reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 10
    store.put_request({"ts": 11.0})  # a new batch gathers again
    assert reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 10
    store.close()
    assert reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 11


def test_schema_is_versioned_and_migrations_run_once(tmp_path):
    conn = connect(tmp_path / "e.db")
    assert migrate(conn) == len(MIGRATIONS)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    migrate(conn)  # again: nothing to do, no error
    extra = ["CREATE TABLE things (x INTEGER);", "ALTER TABLE things ADD COLUMN y INTEGER;"]
    assert migrate(conn, extra, version_table="things_version") == 2
    assert migrate(conn, extra, version_table="things_version") == 2
    assert [r[1] for r in conn.execute("PRAGMA table_info(things)")] == ["x", "y"]


def test_a_bad_row_does_not_stop_the_writer(tmp_path):
    store = EventStore(tmp_path / "e.db")
    store.start()
    store.submit(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"))
    store.put_request({"ts": 1.0})
    store.flush()
    assert store.running
    assert connect(tmp_path / "e.db", readonly=True).execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 1
    store.close()


# ------------------------------------------------------------- rollups

import random  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tokenaddons.store import queries  # noqa: E402

DAY0 = 1_764_000_000.0  # 2025-11-24, a little before midnight UTC


def filled(path, migrations=MIGRATIONS, n=400, seed=3):
    rng = random.Random(seed)
    conn = connect(path)
    migrate(conn, migrations)
    for _ in range(n):
        conn.execute("INSERT INTO requests (ts, provider, model, project, input_tokens, output_tokens, cost_usd, "
                     "status, cache_status) VALUES (?,?,?,?,?,?,?,?,?)",
                     (DAY0 + rng.uniform(-2 * 86400, 3 * 86400), rng.choice(["anthropic", "openai"]),
                      rng.choice(["m1", "m2"]), rng.choice([None, "p"]), rng.randint(0, 900), rng.randint(0, 90),
                      rng.random() / 100, rng.choice([200, 200, 429]), rng.choice([None, "HIT"])))
    conn.commit()
    return conn


def brute(conn, since, until):
    """The same sums straight from the raw rows."""
    rows = conn.execute("SELECT COALESCE(provider, ''), COALESCE(project, ''), COUNT(*), SUM(input_tokens), "
                        "SUM(cost_usd), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) FROM requests "
                        "WHERE ts >= ? AND ts < ? GROUP BY 1, 2", (since, until)).fetchall()
    return {(r[0], r[1]): (r[2], r[3], round(r[4], 9), r[5]) for r in rows}


@given(start=st.floats(-3 * 86400, 4 * 86400), length=st.floats(0, 4 * 86400))
@settings(max_examples=60, deadline=None)
def test_day_hour_and_raw_pieces_sum_exactly_like_the_raw_rows(tmp_path_factory, start, length):
    path = tmp_path_factory.getbasetemp() / "rollups.db"
    conn = connect(path) if path.exists() else filled(path)
    since, until = DAY0 + start, DAY0 + start + length
    found = queries._aggregate(conn, ("provider", "project"), since, until)
    at = {name: queries.SUMS.index(name) for name in ("requests", "input_tokens", "cost_usd", "errors")}
    got = {k: (v[at["requests"]], v[at["input_tokens"]], round(v[at["cost_usd"]], 9), v[at["errors"]])
           for k, v in found.items()}
    assert got == brute(conn, since, until)


def test_an_older_store_gets_its_day_rollup_filled(tmp_path):
    conn = filled(tmp_path / "old.db", MIGRATIONS[:3])  # before the per-day rollup existed
    assert migrate(conn) == len(MIGRATIONS)
    day = conn.execute("SELECT SUM(requests), SUM(cost_usd) FROM rollup_requests_day").fetchone()
    raw = conn.execute("SELECT COUNT(*), SUM(cost_usd) FROM requests").fetchone()
    assert day[0] == raw[0] == 400 and abs(day[1] - raw[1]) < 1e-9
    conn.execute("INSERT INTO requests (ts, provider, cost_usd) VALUES (?, 'x', 1.5)", (DAY0,))
    assert tuple(conn.execute("SELECT requests, cost_usd FROM rollup_requests_day WHERE provider = 'x'").fetchone()) == (1, 1.5)


# ------------------------------------------------------------- nothing lost

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import stat  # noqa: E402
from decimal import Decimal  # noqa: E402

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from tokenaddons.store import health  # noqa: E402
from tokenaddons.store.writer import MAX_TEXT, coerce  # noqa: E402
from tokenaddons.ui.cli import main  # noqa: E402


def count(path, table="requests", where="1=1"):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}").fetchone()[0]
    finally:
        conn.close()


def wait_until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def store(tmp_path):
    s = EventStore(tmp_path / "e.db", stall_after=0.3, watch_every=0.05)
    s.start()
    yield s
    s.close()


def test_values_sqlite_cannot_bind_are_stored_as_their_json_text(store):
    odd = [["x"], {"type": {"nested": True}}, 1 << 70, {1, 2}, Decimal("1.5"), "x" * (MAX_TEXT + 50)]
    for i, value in enumerate(odd):
        store.put_request({"exchange_id": f"e{i}", "ts": float(i), "model": value, "error_type": value})
    store.put_request({"exchange_id": "big", "ts": 9.0, "input_tokens": 1 << 64})
    assert store.flush()
    conn = sqlite3.connect(store.path)
    models = [m for (m,) in conn.execute("SELECT model FROM requests ORDER BY id")]
    assert models[:5] == ['["x"]', '{"type": {"nested": true}}', str(1 << 70), '"{1, 2}"', "1.5"]
    assert models[5] == "x" * (MAX_TEXT + 50)  # strings stay strings
    assert conn.execute("SELECT input_tokens FROM requests WHERE exchange_id = 'big'").fetchone()[0] == float(1 << 64)
    assert store.written == 7 and store.dropped == 0
    assert coerce(True) == 1 and coerce(None) is None and coerce(b"\x00") == b"\x00"
    assert coerce(["y" * 5000]) == json.dumps(["y" * 5000])[:MAX_TEXT]


def test_one_bad_row_costs_only_its_own(store, caplog):
    caplog.set_level(logging.WARNING)
    for i in range(20):  # ts is NOT NULL: row 7 fails on its own, in the middle of the batch
        store.put_request({"exchange_id": f"x{i}", "ts": None if i == 7 else float(i)})
    assert store.flush()
    assert count(store.path) == 19 and store.written == 19 and store.dropped == 1
    assert "'x7'" in caplog.text and "x8" not in caplog.text


def test_any_error_in_a_job_leaves_the_writer_running(store):
    def broken(conn):
        conn.execute("INSERT INTO requests (exchange_id, ts) VALUES ('inside', 1)")
        raise RuntimeError("not a sqlite error")

    store.put_request({"exchange_id": "before", "ts": 1.0})
    store.submit(broken)
    store.put_request({"exchange_id": "after", "ts": 2.0})
    assert store.flush() and store.running
    store.put_request({"exchange_id": "later", "ts": 3.0})
    assert store.flush()
    conn = sqlite3.connect(store.path)
    # the job's own write is undone with it; every row around it is kept
    assert [r for (r,) in conn.execute("SELECT exchange_id FROM requests ORDER BY id")] == ["before", "after", "later"]


def test_an_integer_sqlite_cannot_hold_does_not_stop_the_writer(store):
    store.submit(lambda conn: conn.execute("SELECT ?", (1 << 70,)))  # OverflowError, not a sqlite3.Error
    store.put_request({"ts": 1.0})
    assert store.flush() and store.running and count(store.path) == 1


def test_a_dead_writer_is_loud_and_readers_say_the_store_is_behind(store, caplog):
    caplog.set_level(logging.WARNING)

    def fatal(conn):
        raise SystemExit("gone")  # nothing a job does should get here; if it does, say so

    store.submit(fatal)
    assert wait_until(lambda: not store.running)
    assert "the writer stopped" in caplog.text
    store.put_request({"ts": 1.0})
    assert store.flush() is False
    assert "not running" in caplog.text
    # the watchdog publishes what is queued on its next tick
    assert wait_until(lambda: any(s["queued"] >= 1 for s in health.problems(store.path)))
    status = health.problems(store.path)[0]
    assert status["state"] == "dead" and status["queued"] >= 1 and status["pid"] == os.getpid()
    report = CliRunner().invoke(main, ["report", "--store", str(store.path)])
    assert report.exit_code == 0 and "event store is behind" in report.output and "stopped" in report.output
    as_json = CliRunner().invoke(main, ["report", "--store", str(store.path), "--json"])
    assert "behind" in json.loads(as_json.output)["store_warnings"][0]


def test_a_stuck_writer_is_loud_then_well_again(store, caplog):
    caplog.set_level(logging.WARNING)
    release = threading.Event()
    store.submit(lambda conn: release.wait(10))
    for i in range(3):
        store.put_request({"ts": float(i)})
    assert wait_until(lambda: health.problems(store.path))
    assert "stuck" in caplog.text and store.state == "stuck"
    frame = CliRunner().invoke(main, ["stats", "--store", str(store.path), "--once", "--width", "200"])
    assert frame.exit_code == 0 and "event store is behind" in " ".join(frame.output.split())
    budget = CliRunner().invoke(main, ["budget", "--store", str(store.path)])
    assert "event store is behind" in " ".join(budget.output.split())
    release.set()
    assert store.flush() and count(store.path) == 3
    assert wait_until(lambda: not health.problems(store.path)) and "moving again" in caplog.text
    assert "behind" not in CliRunner().invoke(main, ["report", "--store", str(store.path)]).output


def test_a_status_left_by_a_process_that_is_gone_is_ignored(tmp_path):
    path = tmp_path / "e.db"
    path.touch()
    health.status_file(path, 2 ** 22 + 12345).write_text(json.dumps({"pid": 2 ** 22 + 12345, "state": "dead"}))
    assert health.problems(path) == []


def test_other_tables_are_migrated_before_the_writer_starts(tmp_path):
    extra = ["CREATE TABLE things (x INTEGER);"]
    store = EventStore(tmp_path / "e.db", schemas={"things_schema": extra}, flush_interval=0.05)
    store.start()
    try:
        conn = sqlite3.connect(tmp_path / "e.db")
        assert conn.execute("SELECT version FROM things_schema").fetchone()[0] == 1
        # added once it runs: on a connection of its own, never inside one of the writer's batches
        release = threading.Event()
        store.put_request({"exchange_id": "open", "ts": 1.0})
        store.submit(lambda c: release.wait(10))
        time.sleep(0.2)  # the batch holding that row is open and waiting
        threading.Timer(0.3, release.set).start()
        store.add_schema("more_schema", ["CREATE TABLE more (y INTEGER);"])
        assert store.flush()
        assert conn.execute("SELECT version FROM more_schema").fetchone()[0] == 1
        assert count(tmp_path / "e.db") == 1
    finally:
        store.close()


def test_the_store_and_its_wal_files_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        store = EventStore(tmp_path / "new" / "e.db")
        store.start()
        store.put_request({"ts": 1.0})
        store.flush()
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "new").iterdir()}
        store.close()
    finally:
        os.umask(old)
    assert files == {"e.db": 0o600, "e.db-wal": 0o600, "e.db-shm": 0o600}
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_a_path_with_uri_characters_is_read_where_it_is_written(tmp_path):
    folder = tmp_path / "a#b?c%d"
    store = EventStore(folder / "e.db")
    store.start()
    store.put_request({"ts": 1.0})
    store.flush()
    store.close()
    assert connect(folder / "e.db", readonly=True).execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 1


def test_the_store_addon_takes_its_batch_interval_from_its_option(tmp_path):
    import pytest
    from mitmproxy import exceptions
    from mitmproxy.test import taddons

    from tokenaddons.addons.store import Store

    store = Store()
    with taddons.context(store) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "e.db"), store_batch_s="1.5")
        assert store.events.flush_interval == 1.5
        tctx.configure(store, store_batch_s="0.1")  # the running writer takes it
        assert store.events.flush_interval == 0.1
        with pytest.raises(exceptions.OptionsError, match="store_batch_s"):
            tctx.configure(store, store_batch_s="soon")
        store.done()


def test_a_full_batch_is_written_without_waiting_out_the_interval(tmp_path):
    store = EventStore(tmp_path / "e.db", batch_max=10, flush_interval=60)
    store.start()
    for i in range(25):
        store.put_request({"ts": float(i)})
    reader = connect(tmp_path / "e.db", readonly=True)
    deadline = time.monotonic() + 10
    while reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0] < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0] >= 10  # not after the minute
    store.close()
    assert reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 25
