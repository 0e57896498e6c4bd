"""A real `mitmdump` subprocess running the bundle, for the demo, tests and benchmarks."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LAUNCHER = Path(__file__).with_name("launcher.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
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


class Mitmdump:
    """`mitmdump -s <launcher> --mode reverse:UPSTREAM` (or another `mode`) on a free loopback port.

    `script=False` runs bare mitmdump (the baseline benchmarks compare against).
    Stopped with SIGINT so addons flush (the event store drains its queue).
    """

    def __init__(self, upstream: str, workdir: Path, sets: dict | None = None, script: bool = True,
                 launcher: Path = LAUNCHER, mode: str | None = None, profile: Path | None = None):
        self.upstream = upstream
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = self.workdir / "events.db"
        self.port = free_port()
        self.log = self.workdir / "mitmdump.log"
        code = "from mitmproxy.tools.main import mitmdump; mitmdump()"
        if profile is not None:  # cProfile of the event loop's thread, written when mitmdump stops
            Path(profile).mkdir(parents=True, exist_ok=True)
            out = Path(profile) / f"mitmdump-{self.port}.prof"
            code = ("import cProfile; from mitmproxy.tools.main import mitmdump; "
                    f"cProfile.run('mitmdump()', {str(out)!r})")
        args = [sys.executable, "-c", code,
                "--mode", mode or f"reverse:{upstream}", "--listen-host", "127.0.0.1", "-p", str(self.port)]
        options = {"confdir": self.workdir / "mitmproxy", "flow_detail": 0}
        if script:
            args += ["-s", str(launcher)]
            options["store_path"] = self.store
            # as the bundle sets it once running; from the start, so the readiness probe's
            # connection does not make mitmproxy connect upstream (a one-connection upstream
            # would be used up by it)
            options["connection_strategy"] = "lazy"
        options.update(sets or {})
        self.store = Path(options.get("store_path", self.store))
        # each option once: mitmproxy silently drops a script option given twice
        for k, v in options.items():
            args += ["--set", f"{k}={v}"]
        self.proc = subprocess.Popen(args, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     cwd=self.workdir, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_port(self.port, proc=self.proc)
        except Exception as e:
            self.stop()
            raise RuntimeError(f"mitmdump did not start: {e}\n{self.log.read_text()[-3000:]}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Mitmdump:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
