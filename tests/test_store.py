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
