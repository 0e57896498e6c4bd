"""Shared fixtures: the simulator upstream and a real mitmdump running the bundle."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "scripts" / "tokenaddons.py"
SHARED = ROOT.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class Proxy:
    """A real `mitmdump -s scripts/tokenaddons.py` subprocess in reverse mode."""

    def __init__(self, upstream: str, workdir: Path, sets: dict | None = None):
        self.upstream = upstream
        self.workdir = workdir
        self.store = workdir / "events.db"
        self.port = free_port()
        self.log = workdir / "mitmdump.log"
        args = [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()",
                "-s", str(LAUNCHER), "--mode", f"reverse:{upstream}",
                "--listen-host", "127.0.0.1", "-p", str(self.port),
                "--set", f"confdir={workdir / 'mitmproxy'}",
                "--set", f"store_path={self.store}", "--set", "termlog_verbosity=info",
                "--set", "flow_detail=0"]
        for k, v in (sets or {}).items():
            args += ["--set", f"{k}={v}"]
        self.proc = subprocess.Popen(args, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     cwd=workdir, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_port(self.port, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"mitmdump did not start:\n{self.log.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def make_proxy(tmp_path):
    started: list[Proxy] = []

    def make(upstream: str, sets: dict | None = None, workdir: Path | None = None) -> Proxy:
        wd = workdir or tmp_path / f"proxy{len(started)}"
        wd.mkdir(exist_ok=True)
        p = Proxy(upstream, wd, sets)
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
