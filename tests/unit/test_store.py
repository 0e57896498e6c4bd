import sqlite3
import threading

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
