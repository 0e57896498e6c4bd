"""Shared fixtures: the simulator upstream and a real mitmdump running the bundle."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tokenaddons.process import Mitmdump

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "scripts" / "tokenaddons.py"
SHARED = ROOT.parent / "shared"


def needs_client(path: Path, what: str) -> list:
    """Marks for an end-to-end test of a real client that scripts/setup.sh
    installs (skipped, with the reason, where it could not)."""
    return [pytest.mark.integration,
            pytest.mark.skipif(not path.exists(), reason=f"{what} not installed (scripts/setup.sh installs it)")]


class Proxy(Mitmdump):
    """A real `mitmdump -s scripts/tokenaddons.py` subprocess, in reverse mode
    unless given another `mode` (`regular`: an explicit proxy)."""

    def __init__(self, upstream: str, workdir: Path, sets: dict | None = None, mode: str | None = None):
        super().__init__(upstream, workdir, {"termlog_verbosity": "info", **(sets or {})}, launcher=LAUNCHER,
                         mode=mode)

    def rows(self, n: int | None = None, table: str = "requests", timeout: float = 10.0,
             where: str = "1=1") -> list[dict]:
        """Event rows, waiting until at least `n` exist (the writer batches)."""
        deadline = time.monotonic() + timeout
        rows: list[dict] = []
        while time.monotonic() < deadline:
            if self.store.exists():
                try:
                    conn = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True)
                    conn.row_factory = sqlite3.Row
                    rows = [dict(r) for r in conn.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY id")]
                    conn.close()
                except sqlite3.OperationalError:
                    rows = []
                if n is None or len(rows) >= n:
                    return rows
            time.sleep(0.05)
        if n is not None:
            raise AssertionError(f"expected {n} rows in {table}, found {len(rows)}:\n{self.log.read_text()[-3000:]}")
        return rows


@pytest.fixture
def make_proxy(tmp_path):
    started: list[Proxy] = []

    def make(upstream: str, sets: dict | None = None, workdir: Path | None = None, mode: str | None = None) -> Proxy:
        wd = workdir or tmp_path / f"proxy{len(started)}"
        wd.mkdir(exist_ok=True)
        p = Proxy(upstream, wd, sets, mode)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def sim():
    from tokenaddons.sim import Simulator

    with Simulator() as s:
        yield s


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free port (scripts/setup.sh installs it; skipped where it could not)."""
    from tokenaddons.test import redis

    if not redis.available():
        pytest.skip("redis-server not installed (scripts/setup.sh installs it with apt-get, as root)")
    with redis.RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(autouse=True)
def _process_wide_prices():
    """The settings file's [prices] and [providers] tables are process-wide: a
    test that loads one must not price the next test's requests (under two
    workers, unit/test_budget.py's override without a cache-read price made
    e2e/test_compress.py bill its cache reads at the input price)."""
    from tokenaddons.engines import pricing

    yield
    pricing.set_overrides({})
    pricing.set_families({})
